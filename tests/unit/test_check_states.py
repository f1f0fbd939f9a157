from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hwrepo.domain.checks import Check, CheckState, RevisionState, accepts, revision_state

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def check(state: CheckState, run: int = 1) -> Check:
    return Check(
        id="c",
        revision_id="r",
        project_id="p",
        revision=1,
        kind="drc",
        name="board",
        run=run,
        state=state,
        summary="",
        created=NOW,
    )


def test_unplanned_revision_is_pending_even_without_checks() -> None:
    assert revision_state(False, []) is RevisionState.PENDING


def test_planned_revision_without_checks_is_success() -> None:
    assert revision_state(True, []) is RevisionState.SUCCESS


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([CheckState.PASSED, CheckState.PASSED], RevisionState.SUCCESS),
        ([CheckState.PASSED, CheckState.RUNNING], RevisionState.PENDING),
        ([CheckState.FAILED, CheckState.QUEUED], RevisionState.PENDING),
        ([CheckState.PASSED, CheckState.FAILED], RevisionState.FAILURE),
        ([CheckState.ERRORED], RevisionState.FAILURE),
        ([CheckState.TIMED_OUT], RevisionState.FAILURE),
        ([CheckState.CANCELLED, CheckState.PASSED], RevisionState.FAILURE),  # not superseded
    ],
)
def test_revision_state(states: list[CheckState], expected: RevisionState) -> None:
    assert revision_state(True, [check(s) for s in states]) is expected


def superseded() -> Check:
    cancelled = check(CheckState.CANCELLED)
    cancelled.superseded_by = 2
    return cancelled


@pytest.mark.parametrize(
    ("others", "expected"),
    [
        ([], RevisionState.SUPERSEDED),
        ([CheckState.PASSED], RevisionState.SUPERSEDED),  # a re-run that passed
        ([CheckState.FAILED], RevisionState.FAILURE),  # failure stays for failures
        ([CheckState.ERRORED], RevisionState.FAILURE),
        ([CheckState.TIMED_OUT], RevisionState.FAILURE),
        ([CheckState.CANCELLED], RevisionState.FAILURE),  # cancelled for another reason
        ([CheckState.RUNNING], RevisionState.PENDING),
    ],
)
def test_a_revision_whose_unpassed_checks_were_all_superseded_is_superseded(
    others: list[CheckState], expected: RevisionState
) -> None:
    checks = [superseded(), superseded(), *(check(s) for s in others)]
    assert revision_state(True, checks) is expected


def test_events_move_a_check_forward_only() -> None:
    assert accepts(None, 1, CheckState.QUEUED)
    assert accepts(check(CheckState.QUEUED), 1, CheckState.RUNNING)
    assert accepts(check(CheckState.RUNNING), 1, CheckState.PASSED)
    assert accepts(check(CheckState.QUEUED), 1, CheckState.FAILED)  # started event lost
    assert not accepts(check(CheckState.RUNNING), 1, CheckState.QUEUED)
    assert not accepts(check(CheckState.RUNNING), 1, CheckState.RUNNING)
    assert not accepts(check(CheckState.PASSED), 1, CheckState.FAILED)  # redelivered final
    assert not accepts(check(CheckState.PASSED), 1, CheckState.RUNNING)


def test_a_newer_run_replaces_and_an_older_run_is_ignored() -> None:
    assert accepts(check(CheckState.FAILED, run=1), 2, CheckState.QUEUED)
    assert not accepts(check(CheckState.QUEUED, run=2), 1, CheckState.PASSED)


def test_a_running_check_moves_on_to_a_later_attempt_only() -> None:
    running = check(CheckState.RUNNING)
    running.attempt = 2
    assert accepts(running, 1, CheckState.RUNNING, attempt=3)  # redelivered again
    assert not accepts(running, 1, CheckState.RUNNING, attempt=2)  # a duplicate
    assert not accepts(running, 1, CheckState.RUNNING, attempt=1)  # late, of a dead worker
    assert accepts(running, 1, CheckState.PASSED)
