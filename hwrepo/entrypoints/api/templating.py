"""The pages' Jinja2 environment: one for every page and error page, with the helpers the
templates share."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
templates = Jinja2Templates(directory=TEMPLATES)


def _size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


TRACEBACK_FILE = re.compile(r'File "(?:/job/src/)?([^"]+)", line (\d+)')


def _traceback_links(text: str, project: str, number: int, files: set[str]) -> Markup:
    """A traceback, escaped, with each `File "path", line N` of the revision a link to that
    line of the file's page."""
    out, last = [], 0
    for match in TRACEBACK_FILE.finditer(text):
        path, line = match.group(1), match.group(2)
        if path not in files:
            continue
        url = f"/{project}/revisions/{number}/files/{quote(path)}#L{line}"
        out.append(escape(text[last : match.start()]))
        out.append(
            Markup('File "<a href="{0}">{1}</a>", line <a href="{0}">{2}</a>').format(
                url, path, line
            )
        )
        last = match.end()
    out.append(escape(text[last:]))
    return Markup("").join(out)


templates.env.filters["size"] = _size
templates.env.filters["traceback_links"] = _traceback_links
templates.env.filters["path_url"] = lambda p: quote(str(p))
templates.env.globals["vendor"] = lambda name: f"/static/vendor/{name}"


def wants_html(request: Request) -> bool:
    """A browser asking for a page (Accept names text/html), not an API client."""
    accept = request.headers.get("accept", "")
    return "text/html" in accept


def page_context(request: Request, **extra: Any) -> dict[str, Any]:
    """What every page needs: the signed-in user (if any) and the CSRF token of its forms."""
    signed = getattr(request.state, "signed_in", None)
    csrf = signed.session.csrf if signed else request.cookies.get("hwrepo_csrf", "")
    registration = request.app.state.backends.settings.registration
    return {
        "me": signed.user if signed else None,
        "csrf": csrf,
        "registration": registration,
        **extra,
    }
