"""Device, backend and thread-count selection for the engine.

Kept apart from the engine so the decision is testable without a GPU: ``choose_device`` and
``choose_backend`` are pure; only ``cuda_available`` looks at the machine, and it imports torch only when
an NVIDIA driver is present, so the CPU/ONNX path never pays torch's start-up time and memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

Device = Literal["cpu", "cuda"]
Backend = Literal["onnx", "torch"]

_NVIDIA_MARKERS = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0")


def nvidia_driver_present() -> bool:
    """Cheap check (no torch import) for an NVIDIA driver on this machine."""
    return any(Path(p).exists() for p in _NVIDIA_MARKERS)


def cuda_available() -> bool:
    """True when torch is installed and sees a usable CUDA device."""
    if not nvidia_driver_present():
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def choose_device(requested: str, cuda_ok: bool) -> Device:
    """``auto`` -> cuda when usable, else cpu; an explicit ``cuda`` without CUDA is an error, not a fallback."""
    if requested == "auto":
        return "cuda" if cuda_ok else "cpu"
    if requested == "cuda":
        if not cuda_ok:
            raise RuntimeError("device='cuda' requested but no CUDA device is available (torch.cuda.is_available() is False)")
        return "cuda"
    if requested == "cpu":
        return "cpu"
    raise ValueError(f"device must be auto, cpu or cuda, got {requested!r}")


def choose_backend(requested: str, device: Device, has_onnx: bool, has_torch: bool) -> Backend:
    """Pick the runtime: torch (fp16/bf16) on CUDA; ONNX Runtime int8 on CPU (measured fastest there).

    ``auto`` on CPU falls back to torch fp32 when the artifact has no ONNX export, and an explicit choice
    the artifact cannot serve raises with the missing file named.
    """
    if requested not in ("auto", "onnx", "torch"):
        raise ValueError(f"backend must be auto, onnx or torch, got {requested!r}")
    if requested == "auto":
        if device == "cuda":
            requested = "torch" if has_torch else "onnx"
        else:
            requested = "onnx" if has_onnx else "torch"
    if requested == "onnx":
        if device == "cuda":
            if not has_torch:
                raise ValueError("device='cuda' needs torch weights (model.safetensors or model.fp16.safetensors); this "
                                 "artifact has only the int8 ONNX export, which runs on CPU only: use device='auto'")
            raise ValueError("the ONNX int8 export runs on CPU only; use backend='torch' (or 'auto') on CUDA")
        if not has_onnx:
            raise FileNotFoundError("artifact has no model.int8.onnx (run models.export.export_onnx_int8)")
        return "onnx"
    if not has_torch:
        raise FileNotFoundError("artifact has no model.safetensors / model.fp16.safetensors + encoder_config.json "
                                "(an ONNX-only artifact serves with backend='onnx' on CPU)")
    return "torch"


def cpu_threads(requested: int | None) -> int:
    """Intra-op threads: the setting when given, else every core this process may run on."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be >= 1, got {requested}")
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
