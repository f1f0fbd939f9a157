"""Following a revision's checks from the server's live event stream (Server-Sent Events, read
with httpx-sse), until its state is no longer pending: each check as it goes queued → running
→ its verdict, then one read of the checks list for the final table. The checks are not polled
while waiting; a dropped stream is resumed after the last event seen (Last-Event-ID)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

from hwrepo.client.api import Api, ClientError

FINAL = {"passed", "failed", "errored", "timed_out", "cancelled"}
NO_VERDICT = {"errored", "timed_out", "cancelled"}
EXIT_PASSED, EXIT_FAILED, EXIT_NO_VERDICT, EXIT_PUSH_FAILED = 0, 1, 2, 3


@dataclass
class Outcome:
    checks: dict[str, Any]  # the checks list as the API gives it
    timed_out: bool = False
    waiting_for: list[str] = field(default_factory=list)
    events: int = 0
    require_review: bool = False

    @property
    def state(self) -> str:
        """The state waited for: the checks' alone, or with the required approvals."""
        return revision_state(self.checks, self.require_review)

    @property
    def exit_code(self) -> int:
        if self.timed_out or self.waiting_for:
            return EXIT_NO_VERDICT
        states = [c["state"] for c in self.checks.get("checks", [])]
        if any(s in NO_VERDICT for s in states) or self.state == "pending":
            return EXIT_NO_VERDICT
        if any(s == "failed" for s in states) or self.state == "failure":
            return EXIT_FAILED
        return EXIT_PASSED

    def why(self) -> str:
        review = self.checks.get("review") or {}
        if self.require_review and review.get("state") == "changes_requested":
            by = ", ".join(review.get("changes_requested_by") or [])
            return f"changes were requested by {by}"
        if self.timed_out:
            never = [
                f"{c['kind']} {c['name']} ({c['state']})"
                for c in self.checks.get("checks", [])
                if c["state"] not in FINAL
            ]
            missing = self.checks.get("missing_required") or []
            said = "; ".join(never + [f"required check {m} never came" for m in missing])
            if self.require_review and review.get("state") == "pending":
                got, need = review.get("approvals", 0), review.get("required", 0)
                said = "; ".join(filter(None, [said, f"{got} of {need} approvals given"]))
            return "the time ran out" + (f": {said}" if said else "")
        if self.waiting_for:
            return f"no live worker runs {', '.join(self.waiting_for)}: those checks cannot run"
        return ""


def revision_state(checks: dict[str, Any], require_review: bool) -> str:
    if require_review:
        return str(checks.get("state"))
    return str(checks.get("checks_state") or checks.get("state"))


def wait(
    api: Api,
    owner: str,
    name: str,
    number: int,
    *,
    timeout_s: float,
    show: Callable[[str, dict[str, Any]], None] = lambda state, check: None,
    require_review: bool = False,
) -> Outcome:
    """Follow the checks until they ended (with `require_review`, also until the approvals the
    project requires were given, or a reviewer requested changes)."""
    deadline = time.monotonic() + timeout_s
    path = f"/projects/{owner}/{name}"
    last_id: str | None = None
    planned: int | None = None
    checks: dict[str, dict[str, Any]] = {}
    seen = 0

    def finished(settle: bool = False) -> Outcome | None:
        """The checks list, when it is no longer pending. With `settle` (the events said every
        check ended), a few more reads while the server's index records the last of them."""
        for pause in (0.1, 0.2, 0.4, 0.8, 1.6) if settle else (0.0,):
            body = api.json("GET", f"{path}/revisions/{number}/checks")
            if body.get("waiting_for"):
                return Outcome(
                    body,
                    waiting_for=list(body["waiting_for"]),
                    events=seen,
                    require_review=require_review,
                )
            if revision_state(body, require_review) != "pending":
                return Outcome(body, events=seen, require_review=require_review)
            if settle:
                time.sleep(pause)
        return None

    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            body = api.json("GET", f"{path}/revisions/{number}/checks")
            return Outcome(body, True, events=seen, require_review=require_review)
        headers = {"Last-Event-ID": last_id} if last_id else {}
        watchdog: threading.Timer | None = None
        try:
            with connect_sse(
                api.http,
                "GET",
                f"{path}/events",
                params={"revision": number},
                headers=headers,
                timeout=httpx.Timeout(min(left, 30.0) + 1, connect=10.0),
            ) as source:
                # Heartbeats keep a quiet stream open: the deadline closes it.
                watchdog = threading.Timer(max(left, 0.0), source.response.close)
                watchdog.daemon = True
                watchdog.start()
                if source.response.status_code >= 400:
                    source.response.read()
                    raise ClientError(api.explain(source.response, f"{path}/events"))
                for sse in source.iter_sse():
                    last_id = sse.id or last_id
                    seen += 1
                    try:
                        event = json.loads(sse.data)
                    except ValueError:
                        continue
                    data = event.get("data") or {}
                    kind = sse.event
                    if kind == "revision.planned":
                        planned = int(data.get("checks", 0))
                        if (done := finished()) is not None:
                            return done
                    elif kind == "review.verdict":
                        show(
                            "review",
                            {
                                "kind": "review",
                                "name": data.get("reviewer", ""),
                                "summary": f"{data.get('verdict')} → {data.get('state')}",
                            },
                        )
                        if require_review and (done := finished()) is not None:
                            return done
                        continue
                    elif kind in {"check.queued", "check.started", "check.finished"}:
                        check = checks.setdefault(data["check_id"], {})
                        check.update({k: data[k] for k in ("kind", "name") if k in data})
                        state = {"check.queued": "queued", "check.started": "running"}.get(
                            kind, data.get("state", "errored")
                        )
                        if check.get("state") != state:
                            check["state"] = state
                            show(state, {**check, "summary": data.get("summary", "")})
                    else:
                        continue
                    final = [c for c in checks.values() if c.get("state") in FINAL]
                    complete = planned is not None and len(final) >= planned
                    if complete and len(final) == len(checks) and (done := finished(True)):
                        return done
                    if time.monotonic() >= deadline:
                        break
        except httpx.ConnectError as exc:
            raise ClientError(f"cannot reach the hwrepo server at {api.server}: {exc}") from None
        except (httpx.TransportError, httpx.StreamClosed, SSEError):
            continue  # resumed after the last event seen (or the deadline closed it)
        finally:
            if watchdog is not None:
                watchdog.cancel()
