"""The web pages' URLs: built, and read back into the violation they name."""

from __future__ import annotations

import pytest

from hwrepo.client.api import ClientError
from hwrepo.client.checks import ViolationQuery, parse_violation
from hwrepo.domain import pages


def test_violation_url_round_trips() -> None:
    url = pages.violation_page("https://hw.example.org/", "alice", "my board", 3, "c-17", 4)
    assert url == "https://hw.example.org/alice/my%20board/revisions/3/checks/c-17#violation-4"
    ref = pages.parse_violation_url(url)
    assert ref == pages.ViolationRef("https://hw.example.org", "alice", "my board", 3, "c-17", 4)
    assert ref.project == "alice/my board"


def test_the_line_to_copy_reads_back() -> None:
    line = pages.kicad_show_command("http://127.0.0.1:8080", "alice", "it's", 2, "c1", 0)
    assert line.startswith("hwrepo kicad show --url '") and line.endswith("'")
    assert "'" not in line[len("hwrepo kicad show --url '") : -1]
    ref = pages.parse_violation_url(line[len("hwrepo kicad show --url '") : -1])
    assert (ref.name, ref.check_id, ref.index) == ("it's", "c1", 0)


def test_a_server_under_a_path_prefix_keeps_it() -> None:
    ref = pages.parse_violation_url(
        "http://127.0.0.1:8080/hw/alice/x/revisions/12/checks/abc/#violation-0"
    )
    assert (ref.server, ref.owner, ref.name, ref.number, ref.check_id, ref.index) == (
        "http://127.0.0.1:8080/hw",
        "alice",
        "x",
        12,
        "abc",
        0,
    )


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("alice/x/revisions/1/checks/c#violation-0", "is not a violation's page URL"),
        ("ftp://h/alice/x/revisions/1/checks/c#violation-0", "is not a violation's page URL"),
        ("https://h/alice/x/revisions/1#violation-0", "does not name a check"),
        ("https://h/alice/x/revisions/one/checks/c#violation-0", "does not name a check"),
        ("https://h/alice/x/revisions/1/checks/c", "but not one of its violations"),
        ("https://h/alice/x/revisions/1/checks/c#violation-", "but not one of its violations"),
        ("https://h/alice/x/revisions/0/checks/c#violation-1", "revision numbers start at 1"),
    ],
)
def test_what_is_no_violation_url_is_said(url: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        pages.parse_violation_url(url)


def test_same_server_compares_scheme_host_and_port() -> None:
    assert pages.same_server("https://hw.example.org", "https://HW.example.org:443/x")
    assert pages.same_server("http://127.0.0.1:8080/", "http://127.0.0.1:8080")
    assert not pages.same_server("https://hw.example.org", "http://hw.example.org")
    assert not pages.same_server("https://hw.example.org", "https://hw.example.org.evil.net")
    assert not pages.same_server("http://127.0.0.1:8080", "http://127.0.0.1:8081")


def test_violation_references() -> None:
    assert parse_violation("7") == ViolationQuery(index=7)
    a, b = "363A9F9A-0B01-4EF4-A972-9E6D1EAB7C5A", "00000000-0000-0000-0000-00004cdec22b"
    assert parse_violation(f"starved_thermal:{a},{b}") == ViolationQuery(
        type="starved_thermal", uuids=frozenset({a.lower(), b})
    )
    assert parse_violation(b) == ViolationQuery(uuids=frozenset({b}))
    for bad in ("", "-1", "clearance", "clearance:R1", f"x:{a},nope"):
        with pytest.raises(ClientError, match="is not a violation"):
            parse_violation(bad)
