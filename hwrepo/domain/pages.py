"""The web pages' addresses, built and read back: a revision's page, a check's page and the stable
anchor of one of its violations (`…/revisions/N/checks/CHECK_ID#violation-I`, I counting from 0
over the check's violations as the API lists them). Pure functions, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

_ANCHOR = re.compile(r"violation-(\d+)")
_PATH = re.compile(
    r"/(?P<owner>[^/]+)/(?P<name>[^/]+)/revisions/(?P<number>\d+)/checks/(?P<check>[^/]+)$"
)


def _segment(value: str) -> str:
    return quote(value, safe="")


def revision_page(server: str, owner: str, name: str, number: int) -> str:
    return f"{server.rstrip('/')}/{_segment(owner)}/{_segment(name)}/revisions/{number}"


def check_page(server: str, owner: str, name: str, number: int, check_id: str) -> str:
    return f"{revision_page(server, owner, name, number)}/checks/{_segment(check_id)}"


def violation_page(
    server: str, owner: str, name: str, number: int, check_id: str, index: int
) -> str:
    return f"{check_page(server, owner, name, number, check_id)}#violation-{index}"


def kicad_show_command(
    server: str, owner: str, name: str, number: int, check_id: str, index: int
) -> str:
    """The line a violation's page offers to copy: it selects the violation's items in KiCad."""
    return (
        f"hwrepo kicad show --url '{violation_page(server, owner, name, number, check_id, index)}'"
    )


def same_server(a: str, b: str) -> bool:
    """Whether two URLs name the same server (scheme, host and port; default ports spelled or
    not): a token kept for one is sent to no other."""

    def origin(url: str) -> tuple[str, str, int | None]:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            port = -1
        port = port or {"http": 80, "https": 443}.get(scheme)
        return scheme, (parts.hostname or "").lower(), port

    return origin(a) == origin(b)


@dataclass(frozen=True)
class ViolationRef:
    """One violation of one check, as its page's URL names it."""

    server: str
    owner: str
    name: str
    number: int
    check_id: str
    index: int

    @property
    def project(self) -> str:
        return f"{self.owner}/{self.name}"


def parse_violation_url(url: str) -> ViolationRef:
    """The violation a page URL names; ValueError (a sentence for a person) for anything else."""
    form = "https://SERVER/OWNER/NAME/revisions/N/checks/CHECK_ID#violation-I"
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(f"{url!r} is not a violation's page URL (like {form})")
    # The server may live under a path prefix: the project part is the last five segments.
    path = parts.path.rstrip("/")
    found = _PATH.search(path)
    if found is None:
        raise ValueError(
            f"{url!r} does not name a check: its path should end in "
            "/OWNER/NAME/revisions/N/checks/CHECK_ID"
        )
    anchor = _ANCHOR.fullmatch(parts.fragment)
    if anchor is None:
        raise ValueError(
            f"{url!r} names a check but not one of its violations: add #violation-I "
            "(the violation's number on the check's page)"
        )
    number = int(found["number"])
    if number < 1:
        raise ValueError(f"{url!r}: revision numbers start at 1")
    prefix = path[: found.start()]
    return ViolationRef(
        server=f"{parts.scheme}://{parts.netloc}{prefix}",
        owner=unquote(found["owner"]),
        name=unquote(found["name"]),
        number=number,
        check_id=unquote(found["check"]),
        index=int(anchor[1]),
    )
