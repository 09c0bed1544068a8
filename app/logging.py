"""Structured logs (JSON or console) with the request id on every line, and secrets in URLs
(tokens, signatures, OAuth codes) redacted before any line is written."""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from datetime import datetime, timezone

import orjson

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Record attributes that are not extra fields (uvicorn adds color_message for its own console).
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}


# Query parameters whose values are secrets on some platform (tokens, signatures, OAuth codes).
SECRET_PARAMS = ("access_token", "sign", "client_secret", "refresh_token", "code", "hmac", "app_secret",
                 "consumer_key", "consumer_secret", "session", "state")
_SECRET_QUERY = re.compile(r"([?&](?:%s)=)[^&\s\"'#]*" % "|".join(SECRET_PARAMS), re.IGNORECASE)
# Client libraries that log every request line, URL included, at INFO.
QUIET_LOGGERS = ("httpx", "httpcore", "hpack")


def redact(text: str) -> str:
    """``text`` with the values of secret query parameters replaced."""
    return _SECRET_QUERY.sub(r"\1[redacted]", text)


class _RequestIdFilter(logging.Filter):
    """Adds the request id, and redacts secret query values from the message and its extras."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        for key, value in list(record.__dict__.items()):
            if key not in _RESERVED and isinstance(value, str) and "=" in value:
                setattr(record, key, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = {k: v for k, v in record.__dict__.items() if k not in _RESERVED and k != "request_id"
                  and not k.startswith("_")}
        if extras:
            base += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if rid:
            base += f" request_id={rid}"
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def configure_logging(fmt: str = "console", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
