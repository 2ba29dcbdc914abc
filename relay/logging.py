"""Structured logs: one JSON object a line, carrying workflow and activity ids.

Temporal's `workflow.logger` and `activity.logger` attach `temporal_workflow` and
`temporal_activity` to each record; the formatter lifts their ids to the top level.
Records logged inside a traced request or activity carry `traceId` and `spanId`, so
a log line leads to its trace. A redacting filter masks anything shaped like a
credential, as a last line of defence: code never logs a secret on purpose.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

# (pattern, replacement): the replacement keeps the label so a reader sees what was masked.
_SECRET_PATTERNS = [
    # Authorization header values.
    (re.compile(r"(?i)\b((?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+"), r"\1[REDACTED]"),
    # Relay API keys, webhook signing secrets, Stripe keys.
    (
        re.compile(r"\b(whsec_|rk_|sk_live_|sk_test_)[A-Za-z0-9+/=_-]+"),
        r"\1[REDACTED]",
    ),
    # key=value and "key": "value" pairs whose key names a secret.
    (
        re.compile(
            r"(?i)((?:access|refresh|id)_token|client_secret|password|code_verifier"
            r"|api_key|secret_key|auth_token|encryption_keys)"
            r"([\"']?\s*[:=]\s*[\"']?)[^\"'&\s,}]+"
        ),
        r"\1\2[REDACTED]",
    ),
    # Passwords in URLs (postgresql://user:password@host/db).
    (re.compile(r"(://[^:/@\s]+:)[^@\s/]+@"), r"\1[REDACTED]@"),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        workflow_info = getattr(record, "temporal_workflow", None)
        if isinstance(workflow_info, dict):
            entry["workflowId"] = workflow_info.get("workflow_id")
            entry["runId"] = workflow_info.get("run_id")
            entry["workflowType"] = workflow_info.get("workflow_type")
        activity_info = getattr(record, "temporal_activity", None)
        if isinstance(activity_info, dict):
            entry["workflowId"] = activity_info.get("workflow_id")
            entry["activityId"] = activity_info.get("activity_id")
            entry["activityType"] = activity_info.get("activity_type")
            entry["attempt"] = activity_info.get("attempt")
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["traceId"] = format(span_context.trace_id, "032x")
            entry["spanId"] = format(span_context.span_id, "016x")
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Plain lines for a terminal; tracebacks are redacted like messages."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Access logs would print query strings (OAuth codes and states) verbatim.
    logging.getLogger("uvicorn.access").disabled = True
