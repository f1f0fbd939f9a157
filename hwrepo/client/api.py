"""The server's HTTP API, with the errors a person understands: a wrong URL, an unreachable
server, a refused token, a project that does not exist or is private."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from hwrepo import __version__

TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class ClientError(Exception):
    """The request did not do what was asked; `message` says why, for a person."""

    def __init__(
        self, message: str, status: int | None = None, problem: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.problem = problem or {}  # the server's problem report, when it sent one


class Api:
    def __init__(self, server: str, token: str | None = None) -> None:
        parts = urlsplit(server)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ClientError(f"{server!r} is not a server URL (like https://hwrepo.example.org)")
        self.server = server.rstrip("/")
        headers = {"User-Agent": f"hwrepo-client/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # Every request goes to this server and no redirect is followed, so an http:// server is
        # never spoken to over TLS: no certificate store is loaded for it (30 ms of each start).
        self.http = httpx.Client(
            base_url=self.server + "/api/v1",
            headers=headers,
            timeout=TIMEOUT,
            verify=parts.scheme == "https",
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        """A page of the server (for people), e.g. the revision's."""
        return self.server + path

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ClientError(f"cannot reach the hwrepo server at {self.server}: {exc}") from None
        except httpx.TimeoutException:
            raise ClientError(
                f"the hwrepo server at {self.server} did not answer in time"
            ) from None
        except httpx.HTTPError as exc:
            raise ClientError(f"talking to {self.server} failed: {exc}") from None
        if response.status_code >= 400:
            raise ClientError(
                self.explain(response, path), response.status_code, self.problem(response)
            )
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"{self.server} answered {path} with something that is not JSON: is it an "
                "hwrepo server?"
            ) from None

    def stream_lines(self, path: str, **kwargs: Any) -> Iterator[bytes]:
        with self.http.stream("GET", path, **kwargs) as response:
            if response.status_code >= 400:
                response.read()
                raise ClientError(self.explain(response, path), response.status_code)
            yield from response.iter_bytes()

    @staticmethod
    def problem(response: httpx.Response) -> dict[str, Any]:
        """The answer's problem+json report, or {} when it is none."""
        if "json" in response.headers.get("content-type", ""):
            try:
                body = response.json()
            except ValueError:
                return {}
            return body if isinstance(body, dict) else {}
        return {}

    def explain(self, response: httpx.Response, path: str) -> str:
        """The server's problem message, said for a person."""
        problem = self.problem(response)
        detail = str(problem.get("detail") or "").strip()
        status = response.status_code
        if not problem:
            return (
                f"{self.server} answered {status} for /api/v1{path} without an hwrepo "
                "problem report: is this the URL of an hwrepo server?"
            )
        if status == 401:
            return f"the server refused the token: {detail} (run `hwrepo login` with a new one)"
        if status == 403:
            return f"not allowed: {detail}"
        if status == 404:
            return detail or "not found"
        return detail or f"the server answered {status}"
