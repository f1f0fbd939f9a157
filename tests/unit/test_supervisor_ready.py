"""`hwrepo up` prints its URL only once /readyz answers 200, and says what is not ready when it
never does (against a stand-in for the API's /readyz)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hwrepo.entrypoints.embedded import StartFailed
from hwrepo.entrypoints.supervisor import wait_ready

NOT_READY = {
    "status": "unavailable",
    "checks": {
        "s3": "ok",
        "nats": "NATS JetStream is unreachable: not connected",
        "database": "ok",
    },
}


class ReadyAfter:
    """A /readyz that answers 503 (NATS not connected) `misses` times, then 200."""

    def __init__(self, misses: int) -> None:
        self.misses = misses
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.calls += 1
                ready = outer.calls > outer.misses
                body = json.dumps({"status": "ready"} if ready else NOT_READY).encode()
                self.send_response(200 if ready else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/readyz"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def readyz() -> Iterator[Callable[[int], ReadyAfter]]:
    """Makes stand-ins (closed after the test)."""
    made: list[ReadyAfter] = []

    def make(misses: int) -> ReadyAfter:
        made.append(ReadyAfter(misses))
        return made[-1]

    yield make
    for stub in made:
        stub.close()


def test_waits_until_ready(readyz: Callable[[int], ReadyAfter], tmp_path: Path) -> None:
    stub = readyz(3)
    assert wait_ready(
        stub.url, 10, alive=lambda: True, stopping=threading.Event(), log_path=tmp_path / "api.log"
    )
    assert stub.calls == 4


def test_names_what_is_not_ready_when_it_never_is(
    readyz: Callable[[int], ReadyAfter], tmp_path: Path
) -> None:
    stub = readyz(10**6)
    with pytest.raises(StartFailed) as failed:
        wait_ready(
            stub.url,
            0.5,
            alive=lambda: True,
            stopping=threading.Event(),
            log_path=tmp_path / "api.log",
        )
    message = str(failed.value)
    assert "not ready after 0.5 s" in message
    assert "nats (NATS JetStream is unreachable: not connected)" in message
    assert "s3 (" not in message and "database (" not in message
    assert str(tmp_path / "api.log") in message


def test_an_api_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "api.log"
    log.write_text("Traceback ...\nOSError: [Errno 98] address already in use\n")
    with pytest.raises(StartFailed, match=r"(?s)API exited while starting.*address already"):
        wait_ready(
            "http://127.0.0.1:9/readyz",
            10,
            alive=lambda: False,
            stopping=threading.Event(),
            log_path=log,
        )


def test_ctrl_c_while_waiting_stops_the_wait(
    readyz: Callable[[int], ReadyAfter], tmp_path: Path
) -> None:
    stub = readyz(10**6)
    stopping = threading.Event()
    threading.Timer(0.3, stopping.set).start()
    assert not wait_ready(
        stub.url, 30, alive=lambda: True, stopping=stopping, log_path=tmp_path / "api.log"
    )
