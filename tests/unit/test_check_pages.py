"""Every check kind has its page in the one table, and every page the table names exists."""

from __future__ import annotations

from hwrepo.checks.registry import kinds_table
from hwrepo.entrypoints.api.check_pages import GENERIC, PAGES, page_of
from hwrepo.entrypoints.api.templating import TEMPLATES


def test_every_kind_has_a_page_and_every_page_a_template() -> None:
    assert set(PAGES) == set(kinds_table())
    for page in [*PAGES.values(), GENERIC]:
        assert (TEMPLATES / page.template).is_file(), page.template
    assert page_of("external") is GENERIC  # a check an outside CI reported
