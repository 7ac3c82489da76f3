"""The log config `turnout serve` applies in each worker: stderr, redacted, and lean records."""

from __future__ import annotations

import logging
import logging.config
import pickle
from collections.abc import Iterator

import pytest

from proxy.cli.main import _log_config
from proxy.logs import redact_logs_with
from proxy.wire.redaction import Redactor

HELD = "abc123XYZ-secret-0f1e2d3c"
"""A key of no known format: only its value can be redacted."""


@pytest.fixture
def restored() -> Iterator[None]:
    """Put back the `logging` module's switches and the loggers the config touches."""
    switches = logging.logThreads, logging.logProcesses, logging.logMultiprocessing
    loggers = {name: logging.getLogger(name) for name in ("turnout", "turnout.access", "uvicorn", "")}
    saved = {name: (logger.handlers[:], logger.level, logger.propagate) for name, logger in loggers.items()}
    yield
    logging.logThreads, logging.logProcesses, logging.logMultiprocessing = switches
    for name, (handlers, level, propagate) in saved.items():
        loggers[name].handlers, loggers[name].level, loggers[name].propagate = handlers, level, propagate


@pytest.mark.usefixtures("restored")
def test_the_access_log_writes_redacted_json_lines_to_stderr_without_thread_or_process_lookups(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logging.config.dictConfig(_log_config("info"))
    access = logging.getLogger("turnout.access")
    record = access.makeRecord(
        access.name, logging.INFO, "", 0, '{"caller":"sk-abcdefghijklmnopqrstuvwxyz0123"}', (), None
    )
    assert record.threadName is None
    assert record.processName is None
    assert record.process is None
    access.handle(record)
    line = capsys.readouterr().err.strip()
    assert line.startswith('{"caller":"')
    assert "abcdefghijklmnopqrstuvwxyz0123" not in line  # the formatter redacts key-like text


@pytest.mark.usefixtures("restored")
def test_the_settings_secrets_go_with_the_log_config_to_every_worker(capsys: pytest.CaptureFixture[str]) -> None:
    config = pickle.loads(pickle.dumps(_log_config("info", Redactor([HELD]))))  # noqa: S301 - as uvicorn spawns a worker
    logging.config.dictConfig(config)
    logging.getLogger("turnout.cache").warning("redis failed: AUTH %s rejected", HELD)
    logging.getLogger("turnout.access").info('{"error":"%s"}', HELD)
    logging.getLogger("aiohttp.client").warning("Unclosed session holding %s", HELD)  # through the root logger
    lines = capsys.readouterr().err
    assert HELD not in lines
    assert lines.count("[redacted]") == 3


@pytest.mark.usefixtures("restored")
def test_a_reloaded_policys_secrets_are_added_to_every_redacting_formatter(capsys: pytest.CaptureFixture[str]) -> None:
    logging.config.dictConfig(_log_config("info", Redactor(["first-secret-value"])))
    redact_logs_with(Redactor([HELD]))
    logging.getLogger("turnout").warning("%s and %s", "first-secret-value", HELD)
    assert capsys.readouterr().err.rstrip().endswith("turnout: [redacted] and [redacted]")
