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
