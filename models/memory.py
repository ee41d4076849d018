"""Peak resident memory of this process, for the engine's memory bar (<= 1 GB) in tests and benchmarks.

``resource.getrusage(...).ru_maxrss`` is inherited across fork+exec on Linux: a child of a 1 GB pytest or
benchmark process reports >= 1 GB before it does anything. ``VmHWM`` in /proc/self/status belongs to the
current address space only, so it is the honest number for "a process holding the loaded engine".
"""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """Peak RSS (high-water mark) of this process's own address space, in MiB."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux kB; fallback only
