"""Structured logging (structlog) for every MarketMood process: JSON in production, readable on a console."""

from __future__ import annotations

import logging
import sys
from pathlib import PurePath

import structlog

# Packages that log progress chatter through the *root* logger at INFO (so no logger name can silence them):
# onnxruntime's quantizer writes ~60 lines per int8 export ("Ignore MatMul due to non constant B", ...).
CHATTY_PACKAGES: tuple[tuple[str, ...], ...] = (("onnxruntime", "quantization"),)


class ThirdPartyChatterFilter(logging.Filter):
    """Drop below-WARNING records emitted from the source tree of a package in ``CHATTY_PACKAGES``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        parts = PurePath(record.pathname).parts
        return not any(_contains_run(parts, package) for package in CHATTY_PACKAGES)


def _contains_run(parts: tuple[str, ...], run: tuple[str, ...]) -> bool:
    return any(parts[i : i + len(run)] == run for i in range(len(parts) - len(run) + 1))


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    """Route stdlib and structlog records through one renderer so aiokafka/kafka-python logs look like ours."""
    # Tracebacks as plain text, without local variables: JSON logs carried only "exc_info": true (no type, no
    # message, no stack), and the console's rich tracebacks printed every frame's locals (settings, URLs, rules
    # with their webhook secrets).
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    exceptions: list[structlog.types.Processor] = [structlog.processors.format_exc_info] if fmt == "json" else []
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ThirdPartyChatterFilter())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *exceptions, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
