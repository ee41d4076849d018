"""Registry service logic without a database: artifact packing and the rollback stack."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from models.artifact import ArtifactError, ArtifactInfo, read_info, write_info
from training.registry import RegistryError, pack_artifact, rollback_target, unpack_artifact


def _artifact(tmp_path, version="v1"):
    d = tmp_path / version
    write_info(d, ArtifactInfo(version=version, base_encoder="enc", max_length=64))
    (d / "tokenizer").mkdir()
    (d / "tokenizer" / "vocab.txt").write_text("[PAD]\nhello\n")
    (d / "model.int8.onnx").write_bytes(b"\x00onnx" * 100)
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "epoch-1.pt").write_bytes(b"big")
    return d


def test_pack_is_deterministic_and_roundtrips(tmp_path):
    src = _artifact(tmp_path)
    a, b = pack_artifact(src), pack_artifact(src)
    assert a.data == b.data and a.sha256 == hashlib.sha256(a.data).hexdigest()
    out = unpack_artifact(a.data, a.sha256, tmp_path / "cache" / "v1")
    assert read_info(out).version == "v1"
    assert (out / "tokenizer" / "vocab.txt").read_text() == "[PAD]\nhello\n"
    assert (out / "model.int8.onnx").read_bytes() == (src / "model.int8.onnx").read_bytes()
    assert not (out / "checkpoints").exists()  # training leftovers are not shipped


def test_unpack_refuses_corrupt_bytes_and_leaves_nothing(tmp_path):
    packed = pack_artifact(_artifact(tmp_path))
    with pytest.raises(RegistryError, match="sha256"):
        unpack_artifact(packed.data[:-1] + b"x", packed.sha256, tmp_path / "cache" / "v1")
    assert not (tmp_path / "cache" / "v1").exists()


def test_pack_refuses_a_folder_that_is_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError):
        pack_artifact(tmp_path)


def _h(*moves):
    return [{"version": v, "reason": r} for v, r in moves]


def test_rollback_target_walks_back_through_promotions():
    history = _h(("v1", "first champion"), ("v2", "promote"), ("v3", "promote"))
    assert rollback_target(history) == "v2"
    history += _h(("v2", "rollback from v3"))
    assert rollback_target(history) == "v1"
    history += _h(("v1", "rollback from v2"))
    assert rollback_target(history) is None
    history += _h(("v4", "promote"))
    assert rollback_target(history) == "v1"


def test_rollback_target_none_with_a_single_version():
    assert rollback_target(_h(("v1", "first champion"))) is None
    assert rollback_target([]) is None


# ---------------------------------------------------------------- against a real PostgreSQL

from sqlalchemy import delete  # noqa: E402
from storage.schema import ModelVersion  # noqa: E402
from storage import registry as registry_sql  # noqa: E402
from storage.db import make_engine  # noqa: E402
from training import registry  # noqa: E402


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def test_empty_registry_gets_the_bundled_model_as_first_champion(engine, tmp_path):
    bundled = _artifact(tmp_path, "bundled-1")
    assert registry.ensure_champion(engine, bundled) == "bundled-1"
    assert registry.ensure_champion(engine, _artifact(tmp_path, "other")) == "bundled-1"  # idempotent
    with engine.connect() as conn:
        assert registry_sql.get_alias(conn) == "bundled-1"
        assert registry_sql.count_versions(conn) == 1
        assert registry_sql.get_version(conn, "bundled-1")["status"] == "promoted"


def test_fetch_downloads_once_into_the_cache(engine, tmp_path, monkeypatch):
    registry.register_artifact(engine, _artifact(tmp_path, "v1"))
    cache = tmp_path / "cache"
    downloads: list[str] = []
    download = registry._download
    monkeypatch.setattr(registry, "_download", lambda eng, version: downloads.append(version) or download(eng, version))
    path = registry.fetch_artifact(engine, "v1", cache)
    assert read_info(path).version == "v1" and downloads == ["v1"]
    # Counted, not told by the folder's inode: a re-fetch discards the folder before unpacking the new one, and the
    # file system hands the freed inode number straight to it (the same number here), so that check never failed.
    assert registry.fetch_artifact(engine, "v1", cache) == path and downloads == ["v1"]  # no second download
    with pytest.raises(RegistryError, match="no artifact"):
        registry.fetch_artifact(engine, "ghost", cache)


def _truncate(folder):
    onnx = folder / "model.int8.onnx"
    onnx.write_bytes(onnx.read_bytes()[:7])


def _flip_a_byte(folder):  # same size: only the hash tells
    onnx = folder / "model.int8.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF
    onnx.write_bytes(bytes(data))


def _lose_the_tokenizer(folder):
    (folder / "tokenizer" / "vocab.txt").unlink()


def _add_a_stray_file(folder):  # e.g. an fp32 export that would change which backend loads
    (folder / "model.onnx").write_bytes(b"stray")


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte, _lose_the_tokenizer, _add_a_stray_file])
def test_a_damaged_cache_folder_is_fetched_again_from_the_registry(engine, tmp_path, damage):
    """A cache folder is trusted only as a whole, completed unpack of the registered bytes: a truncated model file,
    a missing, changed or extra file is replaced by a fresh unpack, so
    what loads is the registered artifact (re-packed, byte for byte the stored one) and not garbage forever."""
    registry.register_artifact(engine, _artifact(tmp_path, "v1"))
    with engine.connect() as conn:
        registered_sha = registry_sql.get_artifact(conn, "v1")[1]
    cache = tmp_path / "cache"
    damage(registry.fetch_artifact(engine, "v1", cache))
    path = registry.fetch_artifact(engine, "v1", cache)
    assert pack_artifact(path).sha256 == registered_sha
    assert (path / "model.int8.onnx").read_bytes() == b"\x00onnx" * 100
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [path.name]  # the damaged copy is gone


def test_a_crash_mid_extract_leaves_nothing_that_is_served(engine, tmp_path):
    """A process killed while unpacking leaves a half-written temporary folder (and, without a completion check, a
    half-written folder under the final name after a power loss): the next fetch serves neither, removes the
    leftover and unpacks the registered bytes."""
    registry.register_artifact(engine, _artifact(tmp_path, "v1"))
    cache = tmp_path / "cache"
    good = registry.fetch_artifact(engine, "v1", cache)
    half = cache / f".{good.name}.crashed"
    shutil.copytree(good, half)
    _truncate(half)
    shutil.rmtree(good)
    half.rename(good)  # the worst case: the half folder under the final name
    leftover = cache / f".{good.name}.k1llxd42"  # as mkdtemp names it
    shutil.copytree(good, leftover)
    path = registry.fetch_artifact(engine, "v1", cache)
    assert path == good and (path / "model.int8.onnx").read_bytes() == b"\x00onnx" * 100
    assert not leftover.exists()


def test_a_reused_version_name_is_not_served_from_the_cache(engine, tmp_path):
    """A database reset (or a second registry on the host) reuses a version name for another model: the
    cache must not hand back the old one's files because the name matches."""
    cache = tmp_path / "cache"
    registry.register_artifact(engine, _artifact(tmp_path / "first", "v1"))
    old = registry.fetch_artifact(engine, "v1", cache)
    with engine.begin() as conn:
        conn.execute(delete(ModelVersion).where(ModelVersion.version == "v1"))
    other = _artifact(tmp_path / "second", "v1")
    (other / "model.int8.onnx").write_bytes(b"\x01other" * 100)
    registry.register_artifact(engine, other)
    new = registry.fetch_artifact(engine, "v1", cache)
    assert (new / "model.int8.onnx").read_bytes() == b"\x01other" * 100
    assert (old / "model.int8.onnx").read_bytes() == b"\x00onnx" * 100  # a worker still reading it keeps it
    assert registry.fetch_artifact(engine, "v1", cache) == new


def test_promote_and_rollback_through_the_database(engine, tmp_path):
    for v in ("v1", "v2", "v3"):
        registry.register_artifact(engine, _artifact(tmp_path, v))
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback(engine, by="ana")
    registry.promote(engine, "v1", by="ana")
    assert registry.promote(engine, "v2", by="ana") == "v1"
    assert registry.promote(engine, "v3", by="ana") == "v2"
    with pytest.raises(RegistryError, match="unknown model version"):
        registry.promote(engine, "v9", by="ana")
    assert registry.rollback(engine, by="bo") == ("v3", "v2")
    assert registry.rollback(engine, by="bo") == ("v2", "v1")
    with engine.connect() as conn:
        assert registry_sql.get_alias(conn) == "v1"
        statuses = {v["version"]: v["status"] for v in registry_sql.list_versions(conn)}
        history = [(h["version"], h["changed_by"]) for h in registry_sql.alias_history(conn)]
    assert statuses == {"v1": "promoted", "v2": "rejected", "v3": "rejected"}
    assert history == [("v1", "ana"), ("v2", "ana"), ("v3", "ana"), ("v2", "bo"), ("v1", "bo")]
    with pytest.raises(RegistryError):
        registry.rollback(engine, by="bo")


# ---------------------------------------------------------------- races and stale decisions (issue: registry audit)


def test_an_aliasless_registry_never_activates_an_ungated_candidate(engine, tmp_path):
    """`models register` before any worker started, then a first start: the bundled model serves, not the
    candidate (which `register --promote` then gates against it)."""
    registry.register_artifact(engine, _artifact(tmp_path, "unreviewed"))
    assert registry.ensure_champion(engine, _artifact(tmp_path, "bundled-1")) == "bundled-1"
    with engine.connect() as conn:
        assert registry_sql.get_version(conn, "unreviewed")["status"] == "candidate"


def test_an_aliasless_registry_reactivates_the_newest_served_version(engine, tmp_path):
    for v in ("v1", "v2", "v3"):
        registry.register_artifact(engine, _artifact(tmp_path, v))
    registry.promote(engine, "v1", by="ana")
    registry.promote(engine, "v2", by="ana")  # v1 retired, v2 promoted, v3 a candidate
    with engine.begin() as conn:
        registry_sql.clear_alias(conn, registry_sql.ACTIVE_ALIAS, by="dba", reason="restored without the alias")
    assert registry.ensure_champion(engine, _artifact(tmp_path, "bundled-1")) == "v2"
    with engine.connect() as conn:
        assert registry_sql.count_versions(conn) == 3  # the bundled model was not needed


def test_concurrent_first_starts_register_the_bundled_model_once(db_url, tmp_path):
    import threading

    bundled = _artifact(tmp_path, "bundled-1")
    engines = [make_engine(db_url) for _ in range(4)]
    barrier, results, errors = threading.Barrier(len(engines)), [], []

    def start(eng):
        barrier.wait()
        try:
            results.append(registry.ensure_champion(eng, bundled))
        except Exception as exc:  # noqa: BLE001 - the test reports any crash
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(eng,)) for eng in engines]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == [] and results == ["bundled-1"] * 4
        with engines[0].connect() as conn:
            assert registry_sql.count_versions(conn) == 1
            assert [h["version"] for h in registry_sql.alias_history(conn)] == ["bundled-1"]
    finally:
        for eng in engines:
            eng.dispose()


def test_a_gated_promotion_refuses_when_the_champion_moved(engine, tmp_path):
    """A rollback during a long retrain: the challenger was judged against a model that no longer serves."""
    for v in ("a", "b", "c"):
        registry.register_artifact(engine, _artifact(tmp_path, v))
    registry.promote(engine, "a", by="ana")
    registry.promote(engine, "b", by="ana")  # the retrain starts: champion b
    registry.rollback(engine, by="oncall")  # b -> a while it trains
    for move in (registry.promote, registry.start_shadow):
        with pytest.raises(registry.ChampionChangedError, match="active model is a, not b"):
            move(engine, "c", by="retrain", reason="passed the gate", expected_active="b")
    with engine.connect() as conn:
        assert registry_sql.get_alias(conn) == "a" and registry_sql.get_alias(conn, registry_sql.SHADOW_ALIAS) is None
        assert registry_sql.get_version(conn, "c")["status"] == "candidate"
    assert registry.promote(engine, "c", by="retrain", expected_active="a") == "a"  # the current champion: allowed


def test_the_retrain_leaves_a_stale_winner_a_candidate(engine, tmp_path):
    from types import SimpleNamespace

    from training.retrain import _act_on_verdict

    for v in ("a", "b", "c"):
        registry.register_artifact(engine, _artifact(tmp_path, v))
    registry.promote(engine, "a", by="ana")
    registry.promote(engine, "b", by="ana")
    registry.rollback(engine, by="oncall")
    passed = SimpleNamespace(passed=True, failures=[])
    for hours in (0, 24):
        settings = SimpleNamespace(retrain=SimpleNamespace(shadow_hours=hours))
        outcome = _act_on_verdict(engine, settings, "c", "b", passed, {}, by="retrain", why="retrain", promote=True)
        assert outcome.status == "registered" and "active model is a, not b" in outcome.reason, outcome
    with engine.connect() as conn:
        assert registry_sql.get_alias(conn) == "a" and registry_sql.get_alias(conn, registry_sql.SHADOW_ALIAS) is None


def test_a_shadow_verdict_is_not_carried_out_once_the_shadow_moved(engine, tmp_path):
    """Replica 1 judges shadow b; replica 2's retrain puts c in shadow; replica 1's stale verdict must not
    clear c's alias or promote b."""
    from datetime import UTC, datetime

    for v in ("a", "b", "c"):
        registry.register_artifact(engine, _artifact(tmp_path, v))
    registry.promote(engine, "a", by="ana")
    registry.start_shadow(engine, "b", by="retrain", reason="passed")
    criteria = registry.ShadowCriteria(hours=0, min_scores=0)
    stale = registry.shadow_report(engine, now=datetime.now(UTC), criteria=criteria)
    assert stale["shadow"] == "b" and stale["verdict"] == "ready"
    registry.start_shadow(engine, "c", by="retrain", reason="passed")
    acted = registry.act_on_shadow_report(engine, stale, by="scheduler")
    assert acted["action"] == "none" and "changed while judged" in acted["problems"][-1]
    with engine.connect() as conn:
        assert registry_sql.get_alias(conn) == "a" and registry_sql.get_alias(conn, registry_sql.SHADOW_ALIAS) == "c"
        assert registry_sql.get_version(conn, "c")["status"] == "shadow"
    fresh = registry.finish_shadow(engine, now=datetime.now(UTC), criteria=criteria, by="scheduler")
    assert (fresh["shadow"], fresh["action"]) == ("c", "promoted")


def test_promoting_the_shadow_version_by_hand_ends_its_shadow_stage(engine, tmp_path):
    """Otherwise, after a rollback rejects it, the still-pointing shadow alias would have it promoted again."""
    from datetime import UTC, datetime

    for v in ("a", "b"):
        registry.register_artifact(engine, _artifact(tmp_path, v))
    registry.promote(engine, "a", by="ana")
    registry.start_shadow(engine, "b", by="retrain", reason="passed")
    registry.promote(engine, "b", by="ana", reason="early")
    assert registry.rollback(engine, by="oncall") == ("b", "a")
    criteria = registry.ShadowCriteria(hours=0, min_scores=0)
    assert registry.finish_shadow(engine, now=datetime.now(UTC), criteria=criteria, by="scheduler") is None
    with engine.connect() as conn:
        assert registry_sql.get_alias(conn) == "a" and registry_sql.get_version(conn, "b")["status"] == "rejected"


def test_a_promotion_reason_that_reads_like_a_rollback_does_not_confuse_the_next_rollback(engine, tmp_path):
    for v in ("a", "b", "c"):
        registry.register_artifact(engine, _artifact(tmp_path, v))
    registry.promote(engine, "a", by="ana")
    registry.promote(engine, "b", by="ana")
    registry.promote(engine, "c", by="ana", reason="rollback-safe hotfix")
    assert registry.rollback(engine, by="oncall") == ("c", "b")


@pytest.mark.parametrize("move", ["rollback", "promote"])
def test_moving_the_active_alias_ends_a_shadow_stage_judged_against_the_old_champion(engine, tmp_path, move):
    """c passed the gate against b and went to shadow; b is then rolled back (or another model promoted). c was
    never judged against the model now serving, so its shadow stage ends (a candidate again) instead of its
    verdict promoting it over a after the shadow period."""
    from datetime import UTC, datetime

    for v in ("a", "b", "c", "d"):
        registry.register_artifact(engine, _artifact(tmp_path, v))
    registry.promote(engine, "a", by="ana")
    registry.promote(engine, "b", by="ana")
    registry.start_shadow(engine, "c", by="retrain", reason="passed the gate", expected_active="b")
    if move == "rollback":
        assert registry.rollback(engine, by="oncall") == ("b", "a")
    else:
        registry.promote(engine, "d", by="ana")
    criteria = registry.ShadowCriteria(hours=0, min_scores=0)
    assert registry.finish_shadow(engine, now=datetime.now(UTC), criteria=criteria, by="scheduler") is None
    with engine.connect() as conn:
        assert registry_sql.get_alias(conn) == ("a" if move == "rollback" else "d")
        assert registry_sql.get_alias(conn, registry_sql.SHADOW_ALIAS) is None
        assert registry_sql.get_version(conn, "c")["status"] == "candidate"
        cleared = registry_sql.alias_history(conn, registry_sql.SHADOW_ALIAS)[-1]
    assert cleared["version"] == "c" and cleared["reason"].startswith("cleared:")
