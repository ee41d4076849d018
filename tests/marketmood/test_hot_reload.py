"""Hot reload: the registry-backed provider swaps models between batches (real PostgreSQL).

The provider is given a loader that builds a tiny rule-based classifier from the artifact folder, so these
tests exercise the registry, NOTIFY/polling, download/unpack and the swap without an ONNX model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from marketmood.engines import build_engine, registry_provider
from marketmood.hot_reload import RegistryProvider
from marketmood.settings import REPO_ROOT, load_settings
from models.artifact import ARTIFACT_FILE, BUNDLED_MODEL_DIR, ArtifactInfo, read_info, write_info
from models.prediction import Classifier, Prediction
from storage.db import make_engine
from tests.streams.harness import Db, article, produce, wait_until
from training import registry


class VersionedClassifier:
    """Says 'neutral' for everything and stamps the version of the artifact it was loaded from."""

    def __init__(self, path: Path) -> None:
        self.model_version = read_info(path).version
        self.path = path

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        return [Prediction("Markets", 0.5, "neutral", 0.2, 0.6, 0.2, self.model_version) for _ in texts]


class MuteClassifier(VersionedClassifier):
    """Loads fine, fails every batch (e.g. an export whose graph the runtime rejects at run time)."""

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        raise RuntimeError("ONNXRuntimeError: invalid input shape")


def load_versioned(path: Path) -> Classifier:
    if (path / "broken").exists():
        raise RuntimeError("corrupt weights")
    if (path / "mute").exists():
        return MuteClassifier(path)
    return VersionedClassifier(path)


def _artifact(root: Path, version: str, broken: bool = False, mute: bool = False) -> Path:
    d = root / "src" / version
    write_info(d, ArtifactInfo(version=version, base_encoder="enc", max_length=64))
    if broken:
        (d / "broken").write_text("x")
    if mute:
        (d / "mute").write_text("x")
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
        assert [p.name[:3] for p in (tmp_path / "cache").glob("v2-*") if (p / "artifact.json").is_file()] == ["v2-"]
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
    registry.register_artifact(engine, _artifact(tmp_path, "mute", mute=True))
    provider.start()
    try:
        registry.promote(engine, "bad", by="ana")
        assert provider.check_now() is False
        assert provider.current().model_version == "v1"
        registry.promote(engine, "mute", by="ana")  # loads, but cannot classify: the canary keeps v1 serving
        assert provider.check_now() is False
        assert provider.current().model_version == "v1" and len(provider.current().classify(["x"])) == 1
        registry.promote(engine, "v3", by="ana")
        assert provider.check_now() is True and provider.current().model_version == "v3"
    finally:
        provider.stop()


# ---------------------------------------------------------------- promotion hot-swaps a running worker


def _source_model() -> Path:
    override = os.environ.get("MARKETMOOD_TEST_MODEL_PATH")
    source = Path(override) if override else BUNDLED_MODEL_DIR
    if not (source / ARTIFACT_FILE).is_file():
        pytest.skip("no model artifact: needs models/default_model or MARKETMOOD_TEST_MODEL_PATH")
    return source


def _renamed_copy(source: Path, target: Path, version: str) -> Path:
    """The same weights under another version name: enough to see which version scored what."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoints", "model.safetensors", "*.png"))
    info = json.loads((target / ARTIFACT_FILE).read_text())
    info["version"] = version
    (target / ARTIFACT_FILE).write_text(json.dumps(info))
    return target


def test_a_promoted_model_is_served_with_the_same_limits_as_one_loaded_at_start_up(engine, tmp_path):
    """Regression: the hot-reload engine builder once dropped max_batch_tokens and max_length."""
    settings = load_settings(model={"max_length": 40, "max_batch_tokens": 1234, "batch_size": 16, "threads": 1},
                             home=tmp_path / "home")
    source = _source_model()
    for version in ("lim-v1", "lim-v2"):
        registry.register_artifact(engine, _renamed_copy(source, tmp_path / version, version), slim=True)
    registry.promote(engine, "lim-v1", by="test")
    at_start = build_engine(settings.model, tmp_path / "lim-v1")
    provider = registry_provider(settings, engine)
    provider.start()
    try:
        registry.promote(engine, "lim-v2", by="test")
        provider.check_now()  # or the watcher, woken by NOTIFY, swaps first: either way the same loader
        _wait_for(lambda: provider.version == "lim-v2", timeout=60)
        served = provider.current()
    finally:
        provider.stop()
    assert served.model_version == "lim-v2"
    limits = ("max_length", "max_batch_tokens", "batch_size")
    assert {k: getattr(served, k) for k in limits} == {k: getattr(at_start, k) for k in limits}
    assert (served.max_length, served.max_batch_tokens, served.batch_size) == (40, 1234, 16)


def test_a_worker_over_a_truncated_cached_model_serves_the_registered_one(engine, tmp_path):
    """A cache folder whose model.int8.onnx was cut short (a power loss after the unpack, a disk error) made every
    start of the worker fail, forever: the cache was trusted by its name. It is fetched again from the database."""
    settings = load_settings(model={"threads": 1}, home=tmp_path / "home")
    source = _source_model()
    registry.register_artifact(engine, _renamed_copy(source, tmp_path / "cut-v1", "cut-v1"), slim=True)
    registry.promote(engine, "cut-v1", by="test")
    cached = registry.fetch_artifact(engine, "cut-v1", Path(settings.home) / "models")
    onnx = cached / "model.int8.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    provider = registry_provider(settings, engine)
    provider.start()
    try:
        served = provider.current()
        predictions = served.classify(["Shares tumble after a profit warning"])
    finally:
        provider.stop()
    assert served.model_version == "cut-v1" and predictions[0].model_version == "cut-v1"
    assert onnx.read_bytes() == (source / "model.int8.onnx").read_bytes()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_promotion_hot_swaps_a_running_worker_without_loss_or_duplicates(db_url, kafka_bootstrap, topic_names,
                                                                         tmp_path):
    source = _source_model()
    engine = make_engine(db_url)
    for version in ("hot-v1", "hot-v2"):
        registry.register_artifact(engine, _renamed_copy(source, tmp_path / version, version), slim=True)
    registry.promote(engine, "hot-v1", by="test")

    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETMOOD_")} | {
        "MARKETMOOD_KAFKA_BOOTSTRAP": kafka_bootstrap, "MARKETMOOD_DATABASE_URL": db_url,
        "MARKETMOOD_HOME": str(tmp_path / "home"),
        "MARKETMOOD_TOPICS__RAW": topic_names.raw, "MARKETMOOD_TOPICS__SCORED": topic_names.scored,
        "MARKETMOOD_TOPICS__DEADLETTER": topic_names.deadletter,
        "MARKETMOOD_TOPICS__PARTITIONS": str(topic_names.partitions),
        "MARKETMOOD_WORKER__APP_ID": f"mm-hot-{topic_names.raw}", "MARKETMOOD_WORKER__BATCH_SIZE": "8",
        "MARKETMOOD_WORKER__BATCH_MAX_WAIT_S": "0.2", "MARKETMOOD_WORKER__SESSION_TIMEOUT_S": "6",
        "MARKETMOOD_WORKER__HEARTBEAT_INTERVAL_S": "1", "MARKETMOOD_WORKER__WEB_PORT": "0",
        "MARKETMOOD_WORKER__MODEL_POLL_INTERVAL_S": "1", "MARKETMOOD_MODEL__THREADS": "1",
        "MARKETMOOD_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "worker.log"
    db = Db(db_url)
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "marketmood.cli", "worker"], cwd=REPO_ROOT, env=env,
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            before = [article(i, prefix="before") for i in range(40)]
            during = [article(i, prefix="during") for i in range(120)]
            after = [article(i, prefix="after") for i in range(40)]
            produce(kafka_bootstrap, topic_names.raw, before)
            wait_until(lambda: db.scores() >= 40, 240, what=f"first 40 scores; log:\n{log_path}")
            # Promote while a stream of articles is being scored: the switch must land between batches.
            produce(kafka_bootstrap, topic_names.raw, during)
            registry.promote(engine, "hot-v2", by="test")
            wait_until(lambda: "hot-v2" in log_path.read_text(errors="replace") and db.scores() >= 160, 240,
                       what="the worker to load hot-v2 and finish the stream")
            produce(kafka_bootstrap, topic_names.raw, after)
            wait_until(lambda: db.scores() >= 200, 240, what="all 200 scores")
            time.sleep(2)  # anything extra (a duplicate) would show up now
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)

    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT article_id, model_version FROM scores").all()
    db.close()
    engine.dispose()
    ids = [r[0] for r in rows]
    expected = {m["id"] for m in before + during + after}
    assert set(ids) == expected, "lost or unexpected articles"
    assert len(ids) == len(expected), "an article was scored twice"
    version = dict(rows)
    assert {version[m["id"]] for m in before} == {"hot-v1"}
    assert {version[m["id"]] for m in after} == {"hot-v2"}
    assert set(version[m["id"]] for m in during) <= {"hot-v1", "hot-v2"}
    assert "model.active" in log_path.read_text(errors="replace")


def test_a_version_that_failed_is_retried_with_back_off_not_at_every_poll(engine, tmp_path):
    """Before, a version that loaded but failed the canary (or failed to load) was downloaded, unpacked, loaded
    and logged again at every poll, every 10 s, until the alias moved. Now after 1, 3, 7, ... skipped checks."""
    registry.ensure_champion(engine, _artifact(tmp_path, "v1"))
    registry.register_artifact(engine, _artifact(tmp_path, "mute", mute=True))
    loads: list[str] = []

    def counting_loader(path):
        classifier = load_versioned(path)
        loads.append(classifier.model_version)
        return classifier

    provider = RegistryProvider(engine, cache_dir=tmp_path / "cache", loader=counting_loader, poll_interval_s=30,
                                listen=False)
    provider.start()
    try:
        registry.promote(engine, "mute", by="ana")
        attempts = []
        for _ in range(8):
            assert provider.check_now() is False and provider.current().model_version == "v1"
            attempts.append(loads.count("mute"))
        assert attempts == [1, 1, 2, 2, 2, 2, 3, 3]  # tried at checks 1, 3 and 7
    finally:
        provider.stop()
