"""Structured logs: one JSON object a line, carrying workflow and activity ids.

Temporal's `workflow.logger` and `activity.logger` attach `temporal_workflow` and
`temporal_activity` to each record; the formatter lifts their ids to the top level.
Records logged inside a traced request or activity carry `traceId` and `spanId`, so
a log line leads to its trace. `extra=` fields are rendered too (top-level JSON fields,
or key=value after a text line).

Redaction is a last line of defence (code never logs a secret on purpose) and works two
ways: structured fields are masked by key name, in any style (`access_token`, `accessToken`,
`access-token`, `GITHUB_CLIENT_SECRET`, `code`, `state`), at any depth; rendered text
(messages, exception text, tracebacks) is masked by pattern: the same key names followed
by `=` or `:`, and credential shapes (`ghp_…`, `xoxb-…`, `ya29.…`, `sk_live_…`, `rk_…`,
`whsec_…`, `Bearer …`, JWTs, passwords in URLs). docs/security.md lists what is covered.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

_MASK = "[REDACTED]"
# A bare value ends at a quote, a separator or a brace; a value already partly masked
# ("ya29.[REDACTED]") is taken whole. A quoted value runs to its closing quote.
_BARE = r"""(?:\[REDACTED\]|[^"'&\s,;})])+"""
_QUOTED = r"""b?"(?:[^"\\\n]|\\.)*"|b?'(?:[^'\\\n]|\\.)*'"""
_VALUE = rf"(?P<value>{_QUOTED}|{_BARE})"
# Key names that hold secrets, matched in any style (access_token, accessToken, access-token,
# ACCESS_TOKEN) and after any prefix (GITHUB_CLIENT_SECRET, stripe_secret_key, x-api-key).
_SECRET_WORDS = (
    "token",
    "secret",
    "password",
    "passwd",
    "api key",
    "secret key",
    "private key",
    "secret access key",
    "code verifier",
    "encryption key",
    "encryption keys",
    "credentials",
    "cookie",
)
# Short names that are secrets only as whole keys: the OAuth `code` and `state`.
_EXACT_SECRET_KEYS = {"code", "state", "pwd"}


def _word(words: str) -> str:
    return r"[_.-]?".join(re.escape(part) for part in words.split())


_KEY = r"(?<![A-Za-z0-9_.-])[A-Za-z0-9_.-]*?(?:" + "|".join(_word(w) for w in _SECRET_WORDS) + ")"
# `=`, `: ` or `": "` (atomic: a masked value is not matched again from inside its quotes).
_SEP = r"""(?>["']?\s*[:=]\s*)"""
_SCHEME = r"(?:bearer|basic|token|digest)"


def _mask_value(match: re.Match[str]) -> str:
    """The key and separator kept, the value masked inside its quotes (if it had any)."""
    value = match.group("value")
    quoted = re.match(r"""b?(["'])""", value)
    masked = f"{quoted.group(0)}{_MASK}{quoted.group(1)}" if quoted else _MASK
    return match.group("keep") + masked


_Replacement = str | Callable[[re.Match[str]], str]
_SECRET_PATTERNS: list[tuple[re.Pattern[str], _Replacement]] = [
    # Authorization header values, with or without a scheme (Bearer, Basic, token, ...).
    (
        re.compile(
            rf"""(?i)(?P<keep>authorization(?>["']?\s*[:=]\s*["']?)"""
            rf"(?:{_SCHEME}\s+|(?!{_SCHEME}\s)))(?P<value>{_BARE})"
        ),
        _mask_value,
    ),
    (re.compile(r"(?i)\b((?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + _MASK),
    # Token shapes, wherever they appear: GitHub, Slack, Google access and refresh tokens,
    # Stripe keys, Relay's API keys (rk_), Standard Webhooks secrets, SendGrid keys, JWTs.
    # The prefix is kept so a reader sees what kind of credential was there.
    (
        re.compile(
            r"\b(gh[pousr]_|github_pat_|xox[abeoprs]-|xapp-|ya29\.|sk_live_|sk_test_"
            r"|rk_live_|rk_test_|rk_|whsec_)[A-Za-z0-9+/=._-]+"
        ),
        r"\1" + _MASK,
    ),
    (re.compile(r"(?<![\w/])(1//0)[A-Za-z0-9_-]+"), r"\1" + _MASK),
    (re.compile(r"\b(SG\.)[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), r"\1" + _MASK),
    (re.compile(r"\b(eyJ)[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), r"\1" + _MASK),
    # key=value, key: value and "key": "value" whose key names a secret, in any style.
    (re.compile(rf"(?i)(?P<keep>{_KEY}{_SEP}){_VALUE}"), _mask_value),
    # The OAuth `code` and `state` as query or form parameters, or as quoted keys (a bare
    # `status code: 500` is left alone).
    (
        re.compile(rf"(?i)(?P<keep>(?<![A-Za-z0-9_.-])(?:code|state)(?>\s*=\s*)){_VALUE}"),
        _mask_value,
    ),
    (
        re.compile(rf"""(?i)(?P<keep>(["'])(?:code|state)\2(?>\s*:\s*)){_VALUE}"""),
        _mask_value,
    ),
    # Passwords in URLs (postgresql://user:password@host/db).
    (re.compile(r"(://[^:/@\s]+:)[^@\s/]+@"), r"\1" + _MASK + "@"),
]
_SECRET_SUFFIXES = (*(w.replace(" ", "") for w in _SECRET_WORDS), "authorization")


def redact(text: str) -> str:
    """`text` with every credential-shaped value masked (idempotent)."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def is_secret_key(name: str) -> bool:
    """Whether a field named `name` holds a secret, whatever its style or prefix."""
    normalized = re.sub(r"[^a-z0-9]", "", name.lower())
    return normalized in _EXACT_SECRET_KEYS or normalized.endswith(_SECRET_SUFFIXES)


def redact_value(value: Any, key: str | None = None, depth: int = 0) -> Any:
    """A structured value with secret keys masked at any depth and strings redacted."""
    if value is None or isinstance(value, bool):
        return value
    if key is not None and is_secret_key(key):
        return _MASK
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if depth >= 6:
        return _MASK
    if isinstance(value, Mapping):
        return {str(k): redact_value(v, str(k), depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item, None, depth + 1) for item in value]
    return redact(str(value))


# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
# Extras Relay renders itself (Temporal's), or that only repeat the message (uvicorn's).
_NOT_RENDERED = {"temporal_workflow", "temporal_activity", "color_message"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: redact_value(value, key)
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


class RedactingFilter(logging.Filter):
    """Masks secrets on the record itself: message, extras, traceback and stack.

    Formatters redact again what they render, so a record that reaches them without
    this filter is safe too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # A bad format string: logging's own error report would print the arguments.
            message = f"{record.msg} [arguments dropped: they did not fit the message]"
            record.args = None
            record.msg = message
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        for key, value in _extras(record).items():
            setattr(record, key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _rendered_extras(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in _extras(record).items() if key not in _NOT_RENDERED}


class JsonFormatter(logging.Formatter):
    """One JSON object a line; `extra=` fields become top-level fields, secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
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
        for key, value in _rendered_extras(record).items():
            entry[key if key not in entry else f"extra.{key}"] = value
        if record.exc_info or record.exc_text:
            text = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
            entry["exception"] = redact(text)
        if record.stack_info:
            entry["stack"] = redact(record.stack_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Plain lines for a terminal: `extra=` fields as key=value after the message;
    extras, messages and tracebacks are redacted alike."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extras = _rendered_extras(record)
        if extras:
            line += " " + " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in extras.items())
        return line

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
