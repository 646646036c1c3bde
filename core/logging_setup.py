"""Logging for every `teambot` command.

`TEAMBOT_LOG_FORMAT=json` writes one JSON object per line (time, level, logger, message, and
the exception if any) for log collectors; `text` is for people. Either way every configured
secret is replaced by `***` before a line is written, whoever logged it: a library that puts
a token (or the database URL's password) into an error message must not put it into the logs.
The bots log at TEAMBOT_LOG_LEVEL; one-shot commands (`ingest`, `ask`, …) only warnings and worse.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
from datetime import datetime, timezone
from typing import TextIO

from core.settings import Settings, all_secrets

REDACTED = "***"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Standard LogRecord attributes; anything else on a record was passed with `extra=` and is kept.
_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def secret_values(settings: Settings) -> list[str]:
    """Every configured secret, longest first; a blank or trivial value would redact ordinary text."""
    return sorted((s for s in all_secrets(settings) if len(s) >= 4), key=len, reverse=True)


class RedactingFormatter(logging.Formatter):
    """Replaces secrets in a copy of the record (message with its arguments, extra fields, traceback)
    before `inner` formats it, then in the whole line: JSON escapes `"` and `\\` and %r doubles a
    backslash, so a secret holding them no longer matches once formatted."""

    def __init__(self, inner: logging.Formatter, secrets: list[str]) -> None:
        super().__init__()
        self.inner = inner
        # Each secret as written, as JSON writes it and as repr() writes it; longest first.
        forms = {form for s in secrets for form in (s, json.dumps(s, ensure_ascii=False)[1:-1], repr(s)[1:-1])}
        self.secrets = sorted(forms, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def format(self, record: logging.LogRecord) -> str:
        record = copy.copy(record)  # other handlers get the record as it was logged
        record.msg, record.args = self.redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.inner.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _RECORD_FIELDS and isinstance(value, str):
                setattr(record, key, self.redact(value))
        # Extra fields that are not strings (a dict of headers) are only text once formatted.
        return self.redact(self.inner.format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS and not k.startswith("_")})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:  # as logging.Formatter does: formatted once, or already (and redacted)
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged (a test runner swaps it per command)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(settings: Settings, stream: TextIO | None = None, *, quiet: bool = False) -> logging.Handler:
    """Replace the root logger's handlers with one that writes redacted lines to `stream` (stderr);
    `quiet`: warnings and worse only, whatever TEAMBOT_LOG_LEVEL says."""
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    inner = JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(RedactingFormatter(inner, secret_values(settings)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    level = logging.getLevelName(settings.log_level)
    root.setLevel(max(level, logging.WARNING) if quiet else level)
    # Per-request chatter of the HTTP clients would drown the bot's own lines.
    for noisy in ("httpx", "httpcore", "urllib3", "grpc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return handler
