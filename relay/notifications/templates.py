"""Email templates rendered locally, so a `templateId` means the same mail on both email paths.

SendGrid renders its own dynamic templates; the SMTP path (and anything else that needs the
mail itself) renders `EMAIL_TEMPLATES_DIR/<templateId>/`:

    subject.txt   the subject: plain text, folded onto one line
    body.html     the HTML body: autoescaped, so `<script>` in the data arrives as text
    body.txt      optional plain-text body: not escaped (it is not HTML)

Templates run in Jinja2's `SandboxedEnvironment` (a template cannot reach Python internals)
with `StrictUndefined`: a variable missing from `templateData` is an error
(`TemplateRenderError` naming the template and the variable), never a silently blank
greeting. Template ids match `[A-Za-z0-9][A-Za-z0-9_-]{0,127}` (SendGrid's `d-…` ids do),
so an id can never name a path outside the directory. Compiled templates are cached for the
life of the store: edits to the directory are seen after a restart.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

SUBJECT_FILE = "subject.txt"
HTML_FILE = "body.html"
TEXT_FILE = "body.txt"
_TEMPLATE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


class TemplateNotFoundError(LookupError):
    """No template with that id (or the id is not a valid template id)."""


class TemplateRenderError(ValueError):
    """The template could not be rendered: a missing variable, a syntax error, or something
    the sandbox refused. The message names the template, never the data."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str | None = None


@dataclass(frozen=True)
class _Compiled:
    subject: Template
    html: Template
    text: Template | None


def valid_template_id(template_id: str) -> bool:
    return bool(_TEMPLATE_ID.fullmatch(template_id))


class TemplateStore:
    """The templates of one directory (None: no templates at all). Thread-safe."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        # Autoescape is per environment, not per file name, so HTML and text get their own.
        loader = FileSystemLoader(str(directory)) if directory is not None else None
        common: dict[str, Any] = {
            "loader": loader,
            "undefined": StrictUndefined,
            "auto_reload": False,
            "keep_trailing_newline": False,
        }
        self._html_env = SandboxedEnvironment(autoescape=True, **common)
        self._text_env = SandboxedEnvironment(autoescape=False, **common)
        self._cache: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def _folder(self, template_id: str) -> Path | None:
        if self.directory is None or not valid_template_id(template_id):
            return None
        return self.directory / template_id

    def exists(self, template_id: str) -> bool:
        if template_id in self._cache:
            return True
        folder = self._folder(template_id)
        return (
            folder is not None
            and (folder / SUBJECT_FILE).is_file()
            and (folder / HTML_FILE).is_file()
        )

    def render(self, template_id: str, data: dict[str, Any] | None = None) -> RenderedEmail:
        """The email for `data`; raises TemplateNotFoundError or TemplateRenderError."""
        compiled = self._compiled(template_id)
        values = dict(data or {})
        try:
            subject = compiled.subject.render(values)
            html = compiled.html.render(values)
            text = compiled.text.render(values) if compiled.text is not None else None
        except TemplateError as exc:
            raise TemplateRenderError(
                f"template {template_id} could not be rendered: {exc.message or type(exc).__name__}"
            ) from None
        except Exception as exc:
            # A filter or operator failing on the data (`{{ name + 1 }}`): its message may
            # quote the data, so only its type is kept.
            raise TemplateRenderError(
                f"template {template_id} could not be rendered: {type(exc).__name__}"
            ) from None
        # A subject is one header line: a newline in it would be a header injection.
        return RenderedEmail(subject=" ".join(subject.split()), html=html, text=text)

    def _compiled(self, template_id: str) -> _Compiled:
        cached = self._cache.get(template_id)
        if cached is not None:
            return cached
        folder = self._folder(template_id)
        if folder is None or not self.exists(template_id):
            raise TemplateNotFoundError(f"no email template {template_id!r}")
        with self._lock:
            cached = self._cache.get(template_id)
            if cached is not None:
                return cached
            try:
                has_text = (folder / TEXT_FILE).is_file()
                compiled = _Compiled(
                    subject=self._text_env.get_template(f"{template_id}/{SUBJECT_FILE}"),
                    html=self._html_env.get_template(f"{template_id}/{HTML_FILE}"),
                    text=(
                        self._text_env.get_template(f"{template_id}/{TEXT_FILE}")
                        if has_text
                        else None
                    ),
                )
            except TemplateError as exc:
                raise TemplateRenderError(
                    f"template {template_id} is invalid: {exc.message or type(exc).__name__}"
                ) from None
            self._cache[template_id] = compiled
            return compiled
