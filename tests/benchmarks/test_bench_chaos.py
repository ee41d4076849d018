"""``bench_chaos.py``'s peak RSS is the kernel's high-water mark (VmHWM), not the largest 2-second sample."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.bench_chaos import read_vmhwm_mb, rss_summary


def test_reads_vmhwm_from_proc_status(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "status").write_text("Name:\tpython\nVmPeak:\t 999999 kB\nVmHWM:\t  512000 kB\n"
                                              "VmRSS:\t  300000 kB\n")
    assert read_vmhwm_mb(4242, proc=tmp_path) == pytest.approx(500.0)
    assert read_vmhwm_mb(4243, proc=tmp_path) is None  # gone


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/status").is_file(), reason="no /proc")
def test_reads_this_process() -> None:
    assert read_vmhwm_mb(os.getpid()) > 1


def test_peak_is_the_high_water_mark_not_the_sampled_max() -> None:
    samples = [200.0, 300.0, 310.0, 305.0]
    summary = rss_summary(samples, 480.0)  # a spike between two samples
    assert summary["peak"] == 480 and summary["peak_source"] == "VmHWM"
    assert summary["warm"] == 300 and summary["last"] == 305 and summary["samples"] == 4


def test_falls_back_to_the_samples() -> None:
    summary = rss_summary([200.0, 300.0], None)
    assert summary["peak"] == 300 and summary["peak_source"] == "rss samples"
