"""Structured logging: third-party chatter through the root logger is dropped, everything else is kept."""

from __future__ import annotations

import logging

import pytest

from marketmood.logs import configure_logging


@pytest.fixture
def root_logger_restored():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def _record(pathname: str, level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("root", level, pathname, 1, msg, None, None)


def test_onnxruntime_quantizer_info_is_dropped_but_its_warnings_and_ours_are_kept(root_logger_restored, capsys):
    from onnxruntime.quantization import onnx_quantizer

    configure_logging("INFO")
    quantizer_file = onnx_quantizer.__file__  # where the ~60 lines per int8 export come from
    for record in (
        _record(quantizer_file, logging.INFO, "Ignore MatMul due to non constant B"),
        _record(quantizer_file, logging.WARNING, "quantizer warning kept"),
        _record(__file__, logging.INFO, "our info kept"),
        _record("/elsewhere/onnxruntime/transformers/optimizer.py", logging.INFO, "other onnxruntime info kept"),
    ):
        root_logger_restored.handle(record)
    err = capsys.readouterr().err
    assert "non constant B" not in err
    assert "quantizer warning kept" in err and "our info kept" in err and "other onnxruntime info kept" in err


def _fail(secret: str) -> None:
    raise ZeroDivisionError("the cause")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_an_exception_is_logged_with_its_traceback_and_without_local_variables(root_logger_restored, capsys, fmt):
    """JSON (the Dockerfiles' format) logged ``"exc_info": true``: no type, no message, no stack for
    ``log.exception`` (e.g. alerts' ``alert_rule_failed``), a repr tuple for stdlib loggers; the console's rich
    tracebacks printed every frame's locals (settings, URLs, notifier secrets)."""
    import json

    from marketmood.logs import get_logger

    configure_logging("INFO", fmt)
    try:
        _fail("lacol-a-ni-2retnuh"[::-1])  # a local's value, never in the source a traceback quotes
    except ZeroDivisionError:
        get_logger("tests.logs").exception("structlog_failed")
        logging.getLogger("tests.logs.stdlib").exception("stdlib failed")
    err = capsys.readouterr().err
    assert err.count("ZeroDivisionError: the cause") == 2 and "in _fail" in err, err
    assert "hunter2-in-a-local" not in err, err
    if fmt == "json":
        events = [json.loads(line) for line in err.splitlines() if line.strip()]
        assert [e["event"] for e in events] == ["structlog_failed", "stdlib failed"]
        assert all("ZeroDivisionError: the cause" in e["exception"] and "exc_info" not in e for e in events), events
