"""A ClassifierProvider that follows a registry alias (``active`` by default): hot reload without a restart.

Wiring (registry + engine loader), so it lives in the composition root; ``marketmood.engines`` builds it.

A background thread waits for ``NOTIFY marketmood_model`` (instant) or the poll interval (the fallback,
e.g. behind a pooler that drops LISTEN), reads the alias, downloads + unpacks a new version into the cache
folder and loads it, all off the worker's event loop. Only then is the reference swapped, in one attribute
assignment, so ``current()`` (called by the worker once per batch) returns either the old classifier or the
fully loaded new one, never something half-ready; a batch in flight keeps the classifier it started with,
and every score keeps the version that produced it. A version that fails to load is logged and the current
one stays in service.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.engine import Engine

from models.prediction import Classifier
from models.smoke import SMOKE_TEXTS, check_predictions
from storage import registry as registry_sql
from training import registry

log = structlog.get_logger(__name__)
MAX_SKIPPED_CHECKS = 63  # a failed version is retried at least every 64 checks (~10 min at the default poll)

Loader = Callable[[Path], Classifier]


def _canary(classifier: Classifier, version: str) -> None:
    """A model that loads but cannot classify must not replace one that can: every batch would fail (and be
    retried) until someone rolled back. Raises unless the gate's smoke texts come back as valid predictions of it."""
    problems = check_predictions(classifier.classify(list(SMOKE_TEXTS)), len(SMOKE_TEXTS), version)
    if problems:
        raise registry.RegistryError(f"model {version!r} failed the canary classification: {'; '.join(problems)}"[:300])


class RegistryProvider:
    """Hands the worker the active registry version; swaps to a newly promoted one between batches."""

    def __init__(
        self,
        engine: Engine,
        *,
        cache_dir: Path,
        loader: Loader,
        poll_interval_s: float = 10.0,
        alias: str = registry_sql.ACTIVE_ALIAS,
        listen: bool = True,
    ) -> None:
        self._engine = engine
        self._cache_dir = Path(cache_dir)
        self._loader = loader
        self._poll_interval_s = poll_interval_s
        self._alias = alias
        self._listen = listen
        self._current: Classifier | None = None
        self._version: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._check_lock = threading.Lock()
        # a version that failed to load or to pass the canary: retried after 1, 3, 7, ... skipped checks
        self._failed_version: str | None = None
        self._failures = 0
        self._skips_left = 0
        self.swaps = 0

    # ------------------------------------------------------------- the worker-facing side

    def current(self) -> Classifier:
        classifier = self._current
        if classifier is None:
            raise RuntimeError("RegistryProvider.start() was not called (no model loaded yet)")
        return classifier

    @property
    def version(self) -> str | None:
        return self._version

    # ------------------------------------------------------------- lifecycle

    def start(self) -> RegistryProvider:
        """Load the alias's version now (for ``active``, registering the bundled model on an empty registry), then watch."""
        if self._alias == registry_sql.ACTIVE_ALIAS:
            version = registry.ensure_champion(self._engine)
            if version is None:
                raise RuntimeError("the model registry is empty and no bundled model exists to start from")
        else:
            with self._engine.connect() as conn:
                version = registry_sql.get_alias(conn, self._alias)
            if version is None:
                raise RuntimeError(f"no model version holds the registry alias {self._alias!r}")
        self._load(version)
        self._thread = threading.Thread(target=self._watch, name="model-hot-reload", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> RegistryProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------- the background side

    def check_now(self) -> bool:
        """Read the alias once; load and swap when it moved. True when a swap happened."""
        with self._check_lock:
            with self._engine.connect() as conn:
                wanted = registry_sql.get_alias(conn, self._alias)
            if wanted is None or wanted == self._version:
                return False
            if wanted == self._failed_version and self._skips_left > 0:
                self._skips_left -= 1  # it failed: not downloaded and loaded again at every poll (every 10 s)
                return False
            try:
                self._load(wanted)
            except Exception:  # noqa: BLE001 - keep serving the current model, retry with back-off
                self._failures = self._failures + 1 if wanted == self._failed_version else 1
                self._failed_version = wanted
                self._skips_left = min(2 ** self._failures - 1, MAX_SKIPPED_CHECKS)
                log.exception("model.reload_failed", version=wanted, serving=self._version,
                              failures=self._failures, retry_after_checks=self._skips_left)
                return False
            self._failed_version, self._failures, self._skips_left = None, 0, 0
            return True

    def _load(self, version: str) -> None:
        started = time.monotonic()
        path = registry.fetch_artifact(self._engine, version, self._cache_dir)
        classifier = self._loader(path)
        loaded = getattr(classifier, "model_version", version)
        if loaded != version:
            raise registry.RegistryError(f"registry version {version!r} holds an artifact named {loaded!r}")
        _canary(classifier, version)
        previous = self._version
        self._current, self._version = classifier, version  # the swap: one reference assignment each
        if previous is not None:
            self.swaps += 1
        log.info("model.active", version=version, previous=previous, load_s=round(time.monotonic() - started, 2))

    def _watch(self) -> None:
        """Wait, check, repeat; a broken LISTEN connection is reopened after one poll interval."""
        while not self._stop.is_set():
            listener = self._open_listener() if self._listen else None
            try:
                while not self._stop.is_set():
                    self._wait(listener)
                    try:
                        self.check_now()
                    except Exception:  # noqa: BLE001 - database hiccup: try again next round
                        log.warning("model.poll_failed", exc_info=True)
            except Exception:  # noqa: BLE001 - the listener connection died
                log.warning("model.listen_lost", exc_info=True)
                self._stop.wait(self._poll_interval_s)
            finally:
                if listener is not None:
                    try:
                        listener.close()
                    except Exception:  # noqa: BLE001
                        pass

    def _open_listener(self) -> Any | None:
        """A raw autocommit DBAPI connection LISTENing on the registry channel, or None (poll only)."""
        try:
            return registry_sql.open_listener(self._engine)
        except Exception:  # noqa: BLE001 - polling still works
            log.warning("model.listen_unavailable", exc_info=True)
            return None

    def _wait(self, listener: Any | None) -> bool:
        """Sleep until a notification or the poll interval; True when woken by a notification."""
        if listener is None:
            self._stop.wait(self._poll_interval_s)
            return False
        driver = listener
        deadline = time.monotonic() + self._poll_interval_s
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            ready, _, _ = select.select([driver], [], [], min(remaining, 1.0))
            if ready:
                driver.poll()
                if driver.notifies:
                    driver.notifies.clear()
                    return True
        return False
