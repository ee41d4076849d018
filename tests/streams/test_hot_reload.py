"""Hot reload: the registry-backed provider swaps models between batches (real PostgreSQL).

The provider is given a loader that builds a tiny rule-based classifier from the artifact folder, so these
tests exercise the registry, NOTIFY/polling, download/unpack and the swap without an ONNX model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from models.artifact import ArtifactInfo, read_info, write_info
from models.prediction import Classifier, Prediction
from storage.db import make_engine
from streams.hot_reload import RegistryProvider
from training import registry


class VersionedClassifier:
    """Says 'neutral' for everything and stamps the version of the artifact it was loaded from."""

    def __init__(self, path: Path) -> None:
        self.model_version = read_info(path).version
        self.path = path

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        return [Prediction("Markets", 0.5, "neutral", 0.2, 0.6, 0.2, self.model_version) for _ in texts]


def load_versioned(path: Path) -> Classifier:
    if (path / "broken").exists():
        raise RuntimeError("corrupt weights")
    return VersionedClassifier(path)


def _artifact(root: Path, version: str, broken: bool = False) -> Path:
    d = root / "src" / version
    write_info(d, ArtifactInfo(version=version, base_encoder="enc", max_length=64))
    if broken:
        (d / "broken").write_text("x")
    return d


def _wait_for(predicate, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def test_provider_follows_promotions_and_rollbacks_via_notify(engine, tmp_path):
    registry.ensure_champion(engine, _artifact(tmp_path, "v1"))
    registry.register_artifact(engine, _artifact(tmp_path, "v2"))
    # A long poll interval: only NOTIFY can make the swap fast.
    provider = RegistryProvider(engine, cache_dir=tmp_path / "cache", loader=load_versioned, poll_interval_s=30)
    with provider:
        first = provider.current()
        assert first.model_version == "v1" and provider.version == "v1"
        assert first.classify(["x"])[0].model_version == "v1"
        registry.promote(engine, "v2", by="ana")
        took = _wait_for(lambda: provider.current().model_version == "v2")
        assert took < 5
        assert first.classify(["still usable by the batch in flight"])[0].model_version == "v1"
        assert (tmp_path / "cache" / "v2" / "artifact.json").is_file()
        registry.rollback(engine, by="ana")
        _wait_for(lambda: provider.current().model_version == "v1")
        assert provider.swaps == 2


def test_polling_alone_notices_a_promotion(engine, tmp_path):
    registry.ensure_champion(engine, _artifact(tmp_path, "v1"))
    registry.register_artifact(engine, _artifact(tmp_path, "v2"))
    provider = RegistryProvider(engine, cache_dir=tmp_path / "cache", loader=load_versioned,
                                poll_interval_s=0.2, listen=False)
    with provider:
        registry.promote(engine, "v2", by="ana")
        _wait_for(lambda: provider.version == "v2", timeout=5)


def test_a_version_that_fails_to_load_keeps_the_current_one_serving(engine, tmp_path):
    registry.ensure_champion(engine, _artifact(tmp_path, "v1"))
    registry.register_artifact(engine, _artifact(tmp_path, "bad", broken=True))
    registry.register_artifact(engine, _artifact(tmp_path, "v3"))
    provider = RegistryProvider(engine, cache_dir=tmp_path / "cache", loader=load_versioned, poll_interval_s=30,
                                listen=False)
    provider.start()
    try:
        registry.promote(engine, "bad", by="ana")
        assert provider.check_now() is False
        assert provider.current().model_version == "v1"
        registry.promote(engine, "v3", by="ana")
        assert provider.check_now() is True and provider.current().model_version == "v3"
    finally:
        provider.stop()
