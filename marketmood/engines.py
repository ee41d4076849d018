"""The one place that turns settings into a classifier: the engine builder and the classifier provider.

Start-up and hot reload both load models through ``engine_loader(settings.model)``, so a model promoted
while a worker runs is served with exactly the limits (``max_length``, ``max_batch_tokens``, batch size,
threads, sessions) a worker started with it would use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine as DbEngine

from marketmood.hot_reload import RegistryProvider
from marketmood.settings import ModelSettings, Settings
from models.engine import Engine, load_engine
from models.prediction import ClassifierProvider, StaticProvider
from storage.db import make_engine
from training.registry import model_cache_dir


def engine_options(model: ModelSettings) -> dict[str, Any]:
    """``load_engine`` keyword arguments from the model settings (the only such mapping)."""
    explicit = model.model_fields_set
    return {
        "device": model.device,
        "backend": model.backend,
        # the artifact knows the length it was trained with; only an explicit setting overrides it
        "max_length": model.max_length if "max_length" in explicit else None,
        "batch_size": model.batch_size,
        "threads": model.threads,
        "max_batch_tokens": model.max_batch_tokens,
        "max_padding": model.max_padding,
        "sessions": model.sessions,
    }


def engine_loader(model: ModelSettings) -> Callable[[Path], Engine]:
    """A loader for artifact folders with these settings (used at start-up and by hot reload alike)."""
    options = engine_options(model)

    def load(path: Path) -> Engine:
        return load_engine(path, **options)

    return load


def build_engine(model: ModelSettings, path: Path | None = None) -> Engine:
    """The engine for ``path`` (default: ``model.path``, else the bundled model)."""
    return engine_loader(model)(path if path is not None else model.path)


def registry_provider(settings: Settings, engine: DbEngine) -> RegistryProvider:
    """A provider that follows ``settings.model.alias`` in the registry (not started)."""
    return RegistryProvider(engine, cache_dir=model_cache_dir(settings), loader=engine_loader(settings.model),
                            poll_interval_s=settings.worker.model_poll_interval_s, alias=settings.model.alias)


@contextlib.contextmanager
def classifier_provider(settings: Settings, database_url: str) -> Iterator[ClassifierProvider]:
    """The classifier provider the worker and the API call once per batch.

    With ``model.path`` set (MARKETMOOD_MODEL__PATH) that artifact is pinned: a static provider, and hot
    reload is OFF (logged at start-up). Otherwise the registry-backed provider follows ``model.alias``
    (registering the bundled model on an empty registry) and swaps to a newly promoted model between batches.
    """
    if settings.model.path is not None:
        yield StaticProvider(build_engine(settings.model))
        return
    engine = make_engine(database_url)
    provider = registry_provider(settings, engine).start()
    try:
        yield provider
    finally:
        provider.stop()
        engine.dispose()
