"""One event per line, secrets masked, in both formats."""

from __future__ import annotations

import io
import json
import logging

from generic import logfmt
from generic.secret import Secret


def _capture(fmt: logfmt.LogFormat) -> tuple[io.StringIO, logfmt.EventLogger]:
    stream = io.StringIO()
    logfmt.configure(logging.DEBUG, fmt, stream)
    return stream, logfmt.get_logger("test")


def test_logfmt_line() -> None:
    stream, log = _capture(logfmt.LogFormat.TEXT)
    log.info("vip.added", vip="192.0.2.10", note="two words", multi="a\nb", token=Secret("x"), peers=[1, 2])
    (line,) = stream.getvalue().splitlines()
    assert "level=info" in line and "event=vip.added" in line and "vip=192.0.2.10" in line
    assert 'note="two words"' in line and 'multi="a\\nb"' in line and "token=***" in line
    assert "peers=[1,2]" in line


def test_json_line_and_exception() -> None:
    stream, log = _capture(logfmt.LogFormat.JSON)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("step.failed", token=Secret("x"))
    (line,) = stream.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["event"] == "step.failed" and doc["token"] == "***" and "RuntimeError" in doc["error"]


def test_level_filters() -> None:
    stream = io.StringIO()
    logfmt.configure(logging.WARNING, logfmt.LogFormat.TEXT, stream)
    log = logfmt.get_logger("test")
    log.info("hidden")
    log.warning("shown")
    assert "hidden" not in stream.getvalue() and "shown" in stream.getvalue()
