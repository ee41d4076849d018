"""The one settings -> engine mapping (marketmood.engines), on the bundled model."""

from __future__ import annotations

from marketmood.engines import build_engine, engine_options
from marketmood.settings import load_settings
from models.artifact import BUNDLED_MODEL_DIR, read_info


def test_build_engine_maps_the_model_section_and_keeps_the_artifacts_length_unless_set() -> None:
    model = load_settings(model={"device": "cpu", "batch_size": 8, "max_batch_tokens": 256, "threads": 1}).model
    engine = build_engine(model)
    assert engine.backend == "onnx" and engine.batch_size == 8 and engine.max_batch_tokens == 256
    assert engine.max_length == read_info(BUNDLED_MODEL_DIR).max_length
    assert engine_options(model)["max_length"] is None  # not set explicitly: the artifact decides
    explicit = load_settings(model={"device": "cpu", "max_length": 32, "threads": 1}).model
    assert build_engine(explicit).max_length == 32


def test_max_padding_setting_reaches_the_engine_and_bad_values_are_config_errors() -> None:
    import pytest

    from marketmood.settings import ConfigError

    assert build_engine(load_settings(model={"device": "cpu", "threads": 1}).model).max_padding == 0.1  # auto on CPU
    assert build_engine(load_settings(model={"device": "cpu", "threads": 1, "max_padding": "off"}).model).max_padding is None
    assert build_engine(load_settings(model={"device": "cpu", "threads": 1, "max_padding": 0.25}).model).max_padding == 0.25
    with pytest.raises(ConfigError, match="max_padding"):
        load_settings(model={"max_padding": 1.5})


def test_sessions_setting_reaches_the_engine_and_bad_values_are_config_errors(monkeypatch) -> None:
    import pytest

    from marketmood.settings import ConfigError

    auto = build_engine(load_settings(model={"device": "cpu", "threads": 2}).model).describe()
    assert auto["sessions"] == 2  # auto: one single-thread session per thread, up to two
    assert auto["rewritten_nodes"] == 12  # the bundled model's SkipLayerNormalization nodes, split at load
    assert build_engine(load_settings(model={"device": "cpu", "threads": 1}).model).describe()["sessions"] == 1
    monkeypatch.setenv("MARKETMOOD_MODEL__SESSIONS", "1")
    assert build_engine(load_settings(model={"device": "cpu", "threads": 2}).model).describe()["sessions"] == 1
    with pytest.raises(ConfigError, match="sessions"):
        load_settings(model={"sessions": 0})
