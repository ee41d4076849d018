"""Model registry service: artifacts in and out of PostgreSQL, promotion, rollback, the first champion.

An artifact folder travels as deterministic tar.gz bytes with a sha256, so any machine holding only the
database URL can fetch a version, verify it and unpack it once into a local cache folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.engine import Engine

from models.artifact import (
    BUNDLED_MODEL_DIR,
    FP16_WEIGHTS_FILE,
    METRICS_FILE,
    ONNX_FP32_FILE,
    ONNX_INT8_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    read_info,
    read_training_config,
)
from storage import registry as sql
from training.reproducibility import file_sha256

log = structlog.get_logger(__name__)

ROLLBACK_REASON = "rollback"
# Training leftovers that a worker never needs (checkpoints can be several times the model's size).
CHECKPOINT_DIR = "checkpoints"  # ``training.trainer.CHECKPOINT_DIR``, without importing the training stack
_SKIP_DIRS = {CHECKPOINT_DIR, "__pycache__"}
# Written last into an unpacked cache folder (before its atomic rename): the artifact's sha256 and every file's size
# and sha256. A cache folder is served only when its files match it exactly, so a truncated, changed, missing or
# extra file (a power loss after the rename, a disk error, a hand edit) is fetched again instead of failing to load
# (or loading garbage) at every start. Never packed: it describes one unpack, not the artifact.
CACHE_MANIFEST = ".marketmood-cache.json"


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (unknown version, nothing to roll back to, bad artifact)."""


@dataclass(frozen=True)
class PackedArtifact:
    data: bytes
    sha256: str


def pack_artifact(directory: Path | str, *, slim: bool = False) -> PackedArtifact:
    """tar.gz the artifact folder reproducibly (sorted names, zeroed times/owners) and hash the bytes.

    ``slim`` leaves out the fp32/fp16 weights and the fp32 ONNX when an int8 ONNX export exists: ~23 MB instead of ~110 MB, and
    the CPU serving path needs nothing else (a CUDA worker then runs the ONNX path too).
    """
    directory = Path(directory)
    read_info(directory)  # refuse anything that is not an artifact
    skip_files = {WEIGHTS_FILE, FP16_WEIGHTS_FILE, ONNX_FP32_FILE} if slim and (directory / ONNX_INT8_FILE).is_file() else set()
    buffer = io.BytesIO()
    # mtime=0 in the gzip header keeps equal folders byte-identical.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(directory.rglob("*")):
                rel = path.relative_to(directory)
                if (path.is_dir() or any(part in _SKIP_DIRS for part in rel.parts) or rel.as_posix() in skip_files
                        or rel.as_posix() == CACHE_MANIFEST):
                    continue
                info = tar.gettarinfo(str(path), arcname=rel.as_posix())
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
    data = buffer.getvalue()
    return PackedArtifact(data=data, sha256=hashlib.sha256(data).hexdigest())


def unpack_artifact(data: bytes, expected_sha256: str | None, target: Path) -> Path:
    """Verify and extract into ``target`` atomically (temp folder + manifest written last + rename), so readers
    never see half, and a later :func:`cache_problem` can tell a completed unpack from anything else."""
    actual_sha256 = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and actual_sha256 != expected_sha256:
        raise RegistryError(f"artifact for {target.name} does not match its sha256 {expected_sha256[:12]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(tmp, filter="data")  # "data" refuses absolute paths, links out of tree, devices
        read_info(tmp)
        manifest = {"artifact_sha256": actual_sha256, "files": _file_digests(tmp)}
        (tmp / CACHE_MANIFEST).write_text(json.dumps(manifest, sort_keys=True) + "\n")
        try:
            os.rename(tmp, target)
        except OSError:  # another process unpacked the same version first: theirs is identical if complete
            if cache_problem(target, actual_sha256) is not None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _file_digests(folder: Path) -> dict[str, list[Any]]:
    """{relative path: [size, "sha256:<hex>"]} of every file under ``folder`` except the cache manifest."""
    out: dict[str, list[Any]] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if rel == CACHE_MANIFEST or path.is_dir():
            continue
        out[rel] = [path.stat().st_size, file_sha256(path)]
    return out


def cache_problem(folder: Path, artifact_sha256: str) -> str | None:
    """Why ``folder`` is not a complete unpack of the artifact hashed ``artifact_sha256``, or None when it is.

    Reads every file once (about 0.1 s for a slim artifact), paid only when a version is loaded, never per batch.
    """
    try:
        manifest = json.loads((folder / CACHE_MANIFEST).read_text())
    except FileNotFoundError:
        return "missing" if not folder.exists() else "no completion manifest (an unfinished or foreign unpack)"
    except (OSError, ValueError) as exc:
        return f"unreadable completion manifest ({exc})"
    if not isinstance(manifest, dict) or manifest.get("artifact_sha256") != artifact_sha256:
        return "completion manifest of another artifact"
    expected = manifest.get("files")
    try:
        actual = _file_digests(folder)
    except OSError as exc:
        return f"unreadable file ({exc})"
    if actual != expected:
        expected = expected if isinstance(expected, dict) else {}
        changed = sorted(set(actual) ^ set(expected)
                         | {name for name in actual if name in expected and actual[name] != expected[name]})
        return "missing, extra or changed files: " + ", ".join(changed[:5])
    return None


@contextlib.contextmanager
def _cache_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``target``'s cache slot (``flock`` on a sibling file, freed if the process dies),
    so two processes on one host (a worker and the retrain) never repair or unpack the same folder at once: one
    could remove the folder the other had just completed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _unpack_leftovers(target: Path) -> list[Path]:
    """Temporary folders of ``target``'s unpacks that never finished (``mkdtemp(prefix=".<name>.")`` adds 8
    characters): only called under :func:`_cache_lock`, when no unpack of ``target`` is running."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[A-Za-z0-9_]{{8}}")
    return [p for p in target.parent.iterdir() if p.is_dir() and pattern.fullmatch(p.name)]


def _discard(folder: Path) -> None:
    """Move ``folder`` off its name first (one rename: never half-removed under the name), then delete it. A
    process still reading it keeps its open files (POSIX)."""
    if folder.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        os.rename(folder, aside / "discarded")
        shutil.rmtree(aside, ignore_errors=True)


def model_cache_dir(settings: Any) -> Path:
    """This host's cache of unpacked registry artifacts (``retrain.model_cache_dir``, default ``<home>/models``):
    the one folder workers, the retrain and ``models gate`` share, so a version is unpacked once per host."""
    return Path(settings.retrain.model_cache_dir or Path(settings.home) / "models")


def fetch_artifact(engine: Engine, version: str, cache_dir: Path) -> Path:
    """Local folder of ``version``, downloading and unpacking it only when the cache lacks a sound copy.

    The cache folder is named by the version *and* its artifact's sha256: a version name alone is not an
    identity (a database reset or a second registry on the same host reuses names like ``retrain-...``),
    and a hit by name would serve another model without a word. A folder is served only when it matches its
    completion manifest (:func:`cache_problem`); a damaged one, and temporary folders left by a crash mid-extract,
    are removed and the artifact is fetched from the database again.
    """
    with engine.connect() as conn:
        sha = sql.get_artifact_sha256(conn, version)
    if sha is None:
        raise RegistryError(f"model version {version!r} has no artifact in the registry")
    data = None
    if not sha:  # stored without a hash (not by this code): name the folder by the bytes' own
        data = _download(engine, version)
        sha = hashlib.sha256(data).hexdigest()
    target = Path(cache_dir) / f"{_safe_name(version)}-{sha[:16]}"
    with _cache_lock(target):
        problem = cache_problem(target, sha)
        if problem is None:
            return target
        for leftover in _unpack_leftovers(target):
            shutil.rmtree(leftover, ignore_errors=True)
        if target.exists():
            log.warning("registry.cache_refetch", version=version, folder=str(target), problem=problem)
            _discard(target)
        return unpack_artifact(data if data is not None else _download(engine, version), sha, target)


def _download(engine: Engine, version: str) -> bytes:
    with engine.connect() as conn:
        found = sql.get_artifact(conn, version)
    if found is None:
        raise RegistryError(f"model version {version!r} has no artifact in the registry")
    return found[0]


def _safe_name(version: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in version)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _version_row(
    directory: Path | str,
    *,
    status: str = "candidate",
    data_fingerprint: str | None = None,
    report: dict[str, Any] | None = None,
    extra_config: dict[str, Any] | None = None,
    slim: bool = False,
) -> dict[str, Any]:
    """The ``model_versions`` row of an artifact folder (name, lineage, metrics and config read from it)."""
    directory = Path(directory)
    info = read_info(directory)
    packed = pack_artifact(directory, slim=slim)
    training_config = {**read_training_config(directory), **(extra_config or {})}
    return {
        "version": info.version,
        "parent_version": info.parent_version,
        "status": status,
        "base_encoder": info.base_encoder,
        "data_fingerprint": data_fingerprint or _fingerprint_of(training_config),
        "metrics": _read_json(directory / METRICS_FILE),
        "training_config": training_config,
        "report": report,
        "artifact": packed.data,
        "artifact_sha256": packed.sha256,
    }


def register_artifact(engine: Engine, directory: Path | str, **options: Any) -> str:
    """Store an artifact folder as a new version; ``options`` as for :func:`_version_row` (status, data
    fingerprint, report, ``extra_config`` merged into the stored training config, slim)."""
    row = _version_row(directory, **options)
    with engine.begin() as conn:
        sql.insert_version(conn, **row)
    return row["version"]


def _fingerprint_of(training_config: dict[str, Any]) -> str | None:
    """One hash over whatever data fingerprints training recorded (key names vary by trainer version)."""
    prints = training_config.get("train_examples_fingerprint") or training_config.get("data_fingerprints")
    if not prints:
        return None
    if isinstance(prints, str):
        return prints
    return "sha256:" + hashlib.sha256(json.dumps(prints, sort_keys=True).encode()).hexdigest()


def ensure_champion(engine: Engine, bundled_dir: Path = BUNDLED_MODEL_DIR, *, by: str = "bootstrap") -> str | None:
    """Make sure an active version exists and return it.

    A registry without an active alias activates the newest version that has served before and was not rolled
    back, else the bundled model (registered if needed) - never a candidate nobody gated, such as one added by
    ``models register`` before any worker started. None when there is neither. Concurrent first starts
    serialise on an advisory lock, so the bundled model is inserted once.
    """
    with engine.connect() as conn:
        active = sql.get_alias(conn)
    if active is not None:
        return active
    with engine.begin() as conn:
        sql.lock_bootstrap(conn)
        active = sql.get_alias(conn)
        if active is not None:  # another process bootstrapped while this one waited
            return active
        version = sql.newest_served_version(conn)
        if version is None:
            try:
                row = _version_row(bundled_dir)
            except ArtifactError:
                return None
            existing = sql.get_version(conn, row["version"], with_report=False)
            if existing is None:
                sql.insert_version(conn, **row)
            elif existing["status"] == "rejected":
                return None
            version = row["version"]
        sql.set_alias(conn, version, by=by, reason="first champion")
    return version


class ChampionChangedError(RegistryError):
    """The active model moved (a rollback, a manual promotion) after a decision was taken against it."""


def _check_active(conn: Any, expected_active: str | None) -> None:
    """Lock the active alias and refuse when it no longer points at ``expected_active`` (None: any)."""
    current = sql.get_alias(conn, for_update=True)
    if expected_active is not None and current != expected_active:
        raise ChampionChangedError(f"the active model is {current}, not {expected_active} as when this decision "
                                   "was taken; nothing changed")


def promote(engine: Engine, version: str, *, by: str | None, reason: str = "promote",
            expected_active: str | None = None) -> str | None:
    """Make ``version`` the active model; workers pick it up at their next poll. Returns the previous one.

    ``expected_active``: the champion a gate judged ``version`` against; if the alias has moved since (a
    rollback during a long retrain), nothing is promoted (:class:`ChampionChangedError`).
    """
    with engine.begin() as conn:
        _check_active(conn, expected_active)
        if sql.get_version(conn, version, with_report=False) is None:
            raise RegistryError(f"unknown model version {version!r}")
        if reason.startswith(ROLLBACK_REASON):  # the history marks rollbacks by this prefix (rollback_target)
            reason = f"promote: {reason}"
        return sql.set_alias(conn, version, by=by, reason=reason)


def rollback_target(history: list[dict[str, Any]]) -> str | None:
    """Where ``rollback`` goes: replay the alias history as a stack (moves push, rollbacks pop).

    So two rollbacks in a row walk back two promotions instead of bouncing between the last two versions.
    """
    stack: list[str] = []
    for entry in history:
        if (entry.get("reason") or "").startswith(ROLLBACK_REASON):
            if stack:
                stack.pop()
            # the rollback landed on entry["version"]; keep the stack top consistent with the alias
            if not stack or stack[-1] != entry["version"]:
                stack.append(entry["version"])
        elif not stack or stack[-1] != entry["version"]:
            stack.append(entry["version"])
    return stack[-2] if len(stack) >= 2 else None


def rollback(engine: Engine, *, by: str | None) -> tuple[str, str]:
    """Re-activate the version that was active before the current one; returns (from, to)."""
    with engine.begin() as conn:
        current = sql.get_alias(conn, for_update=True)  # before reading the history: a promotion cannot slip in
        target = rollback_target(sql.alias_history(conn))
        if current is None or target is None:
            raise RegistryError("nothing to roll back to: the active alias has no earlier version")
        sql.set_alias(conn, target, by=by, reason=f"{ROLLBACK_REASON} from {current}")
        sql.set_status(conn, current, "rejected")
    return current, target


# ---------------------------------------------------------------- shadow stage


@dataclass(frozen=True)
class ShadowCriteria:
    hours: float = 48.0
    min_scores: int = 500
    min_agreement: float = 0.8
    max_confidence_drop: float = 0.05


def start_shadow(engine: Engine, version: str, *, by: str | None, reason: str,
                 expected_active: str | None = None) -> str | None:
    """Point the ``shadow`` alias at ``version`` (status ``shadow``): a shadow worker scores live traffic
    with it; its scores stay out of dashboards and alerts. Returns the shadow version it replaced.
    ``expected_active`` as for :func:`promote`."""
    with engine.begin() as conn:
        _check_active(conn, expected_active)
        if sql.get_version(conn, version, with_report=False) is None:
            raise RegistryError(f"unknown model version {version!r}")
        return sql.set_alias(conn, version, alias=sql.SHADOW_ALIAS, by=by, reason=reason)


def shadow_report(engine: Engine, *, now: datetime, criteria: ShadowCriteria) -> dict[str, Any] | None:
    """Agreement and confidence of the shadow version vs the active one since the shadow started, and the
    verdict (``ready``: promote; ``failing``: out of range; ``waiting``: period or volume not reached)."""
    with engine.connect() as conn:
        shadow = sql.get_alias(conn, sql.SHADOW_ALIAS)
        champion = sql.get_alias(conn)
        if shadow is None or champion is None:
            return None
        started = sql.alias_set_at(conn, sql.SHADOW_ALIAS, shadow) or now
        stats = sql.shadow_pairs(conn, shadow=shadow, champion=champion, start=started, end=now)
    return {"shadow": shadow, "champion": champion, "started_at": started, "until": now, **stats,
            **judge_shadow(stats, elapsed_hours=(now - started).total_seconds() / 3600, criteria=criteria)}


def judge_shadow(stats: dict[str, Any], *, elapsed_hours: float, criteria: ShadowCriteria) -> dict[str, Any]:
    """Pure verdict on shadow statistics: out-of-range values fail at once, promotion waits for the period."""
    problems = []
    agreement = stats.get("sentiment_agreement")
    drop = None
    if stats.get("champion_confidence") is not None and stats.get("shadow_confidence") is not None:
        drop = stats["champion_confidence"] - stats["shadow_confidence"]
    enough = stats.get("pairs", 0) >= criteria.min_scores
    if enough and agreement is not None and agreement < criteria.min_agreement:
        problems.append(f"sentiment agreement {agreement:.3f} < {criteria.min_agreement}")
    if enough and drop is not None and drop > criteria.max_confidence_drop:
        problems.append(f"mean confidence {drop:.3f} below the champion's (limit {criteria.max_confidence_drop})")
    if problems:
        return {"verdict": "failing", "problems": problems, "elapsed_hours": elapsed_hours}
    waiting = []
    if elapsed_hours < criteria.hours:
        waiting.append(f"{elapsed_hours:.1f} h of {criteria.hours} h")
    if not enough:
        waiting.append(f"{stats.get('pairs', 0)} paired scores of {criteria.min_scores}")
    return {"verdict": "waiting" if waiting else "ready", "problems": waiting, "elapsed_hours": elapsed_hours}


def finish_shadow(engine: Engine, *, now: datetime, criteria: ShadowCriteria, by: str | None,
                  force: bool = False) -> dict[str, Any] | None:
    """Promote a ``ready`` shadow version (or any, with ``force``), reject a ``failing`` one; else wait."""
    report = shadow_report(engine, now=now, criteria=criteria)
    return None if report is None else act_on_shadow_report(engine, report, by=by, force=force)


def act_on_shadow_report(engine: Engine, report: dict[str, Any], *, by: str | None,
                         force: bool = False) -> dict[str, Any]:
    """Carry out a :func:`shadow_report`'s verdict (``action``: promoted / rejected / none) if it still holds."""
    report = dict(report)
    version = report["shadow"]
    if report["verdict"] not in ("ready", "failing") and not force:
        report["action"] = "none"
        return report
    with engine.begin() as conn:
        # The report was read without locks (it can take a while); act only if neither alias has moved since
        # and the version is still in shadow (another replica's verdict, a new shadow, a manual promotion).
        shadow_now = sql.get_alias(conn, sql.SHADOW_ALIAS, for_update=True)
        active_now = sql.get_alias(conn, for_update=True)
        record = sql.get_version(conn, version, with_report=False) or {}
        if (shadow_now, active_now, record.get("status")) != (version, report["champion"], "shadow"):
            report["action"] = "none"
            report["problems"] = [*report["problems"], f"changed while judged: shadow {shadow_now}, active "
                                  f"{active_now}, {version} {record.get('status')}"]
            return report
        if report["verdict"] == "ready" or force:
            sql.clear_alias(conn, sql.SHADOW_ALIAS, by=by, reason=f"promoted {version}")
            sql.set_alias(conn, version, by=by, reason=f"shadow passed ({report['sentiment_agreement']} agreement)"
                          if not force else "shadow promoted by force")
            report["action"] = "promoted"
        else:
            sql.clear_alias(conn, sql.SHADOW_ALIAS, by=by, reason="; ".join(report["problems"]))
            sql.set_status(conn, version, "rejected")
            report["action"] = "rejected"
    return report
