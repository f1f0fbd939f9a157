"""S3 object storage through the MinIO SDK: content-addressed blobs, JSON documents, listings.

Object layout (the bucket is the source of truth; see docs/architecture.md):
  blobs/sha256/<2>/<2>/<sha256>                     file contents, stored once
  users/<name>.json                                  users and their hashed tokens
  projects/<project-id>/project.json                 project metadata, members, tombstone
  projects/<project-id>/revisions/<number>.json      one manifest per revision (10-digit number)
  results/<project-id>/<number>/plan.json           the revision's planned checks
  results/<project-id>/<number>/<check-id>/<run>/    a check run: check.json, artifacts/
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote, urlsplit

import urllib3
from minio import Minio
from minio.credentials import Credentials
from minio.error import MinioException, S3Error, ServerError
from minio.signer import sign_v4_s3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from hwrepo.domain.errors import ServiceUnavailable

log = logging.getLogger(__name__)

SERVICE = "S3 object storage"
T = TypeVar("T")
CHUNK = 1024 * 1024
AT_ONCE = 4  # requests to the bucket in flight at once for a batch (each mostly a round trip)
PART_SIZE = 16 * 1024 * 1024
_MISSING = {"NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound"}
_BUCKET_EXISTS = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}
CONNECT_TIMEOUT_S = 3.0


def blob_key(sha256: str) -> str:
    return f"blobs/sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def project_key(project_id: str) -> str:
    return f"projects/{project_id}/project.json"


def manifest_key(project_id: str, number: int) -> str:
    return f"projects/{project_id}/revisions/{number:010d}.json"


def plan_key(project_id: str, number: int) -> str:
    return f"results/{project_id}/{number:010d}/plan.json"


def result_prefix(project_id: str, number: int, check_id: str, run: int) -> str:
    return f"results/{project_id}/{number:010d}/{check_id}/{run}/"


def live_log_prefix(project_id: str, number: int, check_id: str, run: int) -> str:
    """Where a running job's log is copied as it grows, in segments named by their offset."""
    return result_prefix(project_id, number, check_id, run) + "live-log/"


def comparison_prefix(project_id: str, a: int, b: int) -> str:
    return f"comparisons/{project_id}/{a:010d}...{b:010d}/"


def thread_key(project_id: str, thread_id: str) -> str:
    return f"projects/{project_id}/reviews/threads/{thread_id}.json"


def verdict_key(project_id: str, number: int, reviewer: str) -> str:
    return f"projects/{project_id}/reviews/verdicts/{number:010d}/{reviewer}.json"


def user_key(name: str) -> str:
    return f"users/{name}.json"


def _timed_out(error: BaseException | None) -> bool:
    """A connect, send or read that waited its whole timeout (urllib3 wraps a send that timed
    out in a ProtocolError). A refused connection is no time-out (urllib3 derives its error from
    ConnectTimeoutError all the same): it fails at once, and retrying it costs nothing."""
    if isinstance(error, NewConnectionError):
        return False
    if isinstance(error, (Urllib3Timeout, TimeoutError)):
        return True
    return isinstance(error, ProtocolError) and any(_timed_out(a) for a in error.args[1:])


class _Retry(urllib3.Retry):
    """A refused or dropped connection and a 502/503/504 are retried (a few times, quickly); a
    timeout never is: a server that accepts connections but does not answer (stopped, wedged)
    fails the call after one timeout, not after one per attempt."""

    def increment(  # type: ignore[override]
        self,
        method: Any = None,
        url: Any = None,
        response: Any = None,
        error: Any = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> _Retry:
        if _timed_out(error):
            raise MaxRetryError(_pool, url, error) from error
        return super().increment(method, url, response, error, _pool, _stacktrace)


class ObjectStore:
    """One per process (a Minio client is thread-safe, not process-safe).

    Every call fails within seconds when the store does not answer: each connect and each send
    may wait CONNECT_TIMEOUT_S (at most; `timeout_s` when shorter), each read `timeout_s` — a
    timeout per socket operation, not per transfer, so a large upload or download that keeps
    moving is never cut off — and a timed-out call is not retried. The error is a
    ServiceUnavailable naming S3 (the API's 503)."""

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str | None,
        secret_key: str | None,
        bucket: str,
        region: str = "us-east-1",
        secure: bool = False,
        timeout_s: float = 5.0,
    ) -> None:
        # Few, quick retries: an unreachable store must become a 503 in seconds, not minutes.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(CONNECT_TIMEOUT_S, timeout_s), read=timeout_s),
            maxsize=16,
            retries=_Retry(total=2, backoff_factor=0.2, status_forcelist=[502, 503, 504]),
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )
        self.bucket = bucket
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.region = region
        self.secure = secure
        self._credentials = Credentials(access_key or "", secret_key or "")
        self._checks_checksums: bool | None = None
        self._probe_lock = threading.Lock()

    # -- blobs a client sends straight to the store ----------------------------------------
    def signed_blob_put(self, base_url: str, sha256: str, size: int) -> dict[str, Any]:
        """A PUT of the blob `sha256` (of `size` bytes) for someone else to send to the store at
        `base_url`, signed here (the secret stays here). The signature covers the key, the size
        and the `x-amz-checksum-sha256` header, and the payload is unsigned: a store that checks
        that checksum (`checks_checksums`) keeps only bytes with this SHA-256. S3 takes a signed
        request for SIGNED_PUT_S after its date."""
        return self._signed_put(base_url, blob_key(sha256), bytes.fromhex(sha256), size)

    def _signed_put(self, base_url: str, key: str, digest: bytes, size: int) -> dict[str, Any]:
        url = urlsplit(f"{base_url.rstrip('/')}/{self.bucket}/{key}")
        date = datetime.now(UTC).replace(microsecond=0)
        headers = {
            "Host": url.netloc,
            "x-amz-date": date.strftime("%Y%m%dT%H%M%SZ"),
            "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
            "x-amz-checksum-sha256": base64.b64encode(digest).decode(),
            "content-length": str(size),
        }
        signed = sign_v4_s3(
            method="PUT",
            url=url,
            region=self.region,
            headers=dict(headers),
            credentials=self._credentials,
            content_sha256="UNSIGNED-PAYLOAD",
            date=date,
        )
        return {
            "method": "PUT",
            "url": url.geturl(),
            "headers": {k: v for k, v in signed.items() if k != "Host"},
            "expires": (date + timedelta(seconds=SIGNED_PUT_S)).isoformat(),
        }

    def checks_checksums(self) -> bool:
        """Whether the store refuses a PUT whose bytes are not those of its signed
        `x-amz-checksum-sha256` (asked once: a probe with other bytes than it claims, which
        must be refused and leave nothing)."""
        with self._probe_lock:
            if self._checks_checksums is None:
                self._checks_checksums = self._probe_checksums()
            return bool(self._checks_checksums)

    def _probe_checksums(self) -> bool | None:
        """The probe's answer; None when the store could not be asked (asked again next time)."""
        import httpx

        key = f"probes/checksum-{secrets.token_hex(8)}"
        claimed = b"the bytes a client claims"
        sent = claimed[::-1]  # other bytes, the same length
        base = f"{'https' if self.secure else 'http'}://{self.endpoint}"
        put = self._signed_put(base, key, hashlib.sha256(claimed).digest(), len(sent))
        try:
            refused = httpx.put(put["url"], content=sent, headers=put["headers"], timeout=10)
            kept_other = self.exists(key)
            # and the claimed bytes themselves are taken (a store that refuses the header
            # whatever the bytes would refuse every offer)
            taken = httpx.put(put["url"], content=claimed, headers=put["headers"], timeout=10)
            kept = self.exists(key)
            if kept_other or kept:
                self.delete(key)
        except Exception as exc:  # whatever it was, no offers now, and the question again later
            log.warning("could not ask the S3 server whether it checks checksums: %s", exc)
            return None
        return refused.status_code == 400 and not kept_other and taken.is_success and kept

    # -- error translation -----------------------------------------------------------------
    def _call(self, fn: Callable[[], T]) -> T:
        """fn() with every failure of the store as a ServiceUnavailable (S3 errors a method
        expects, such as a missing key, are handled inside its `fn`)."""
        try:
            return fn()
        except S3Error as exc:
            raise self._failed(exc) from exc
        except (Urllib3Error, ServerError, MinioException, OSError) as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: BaseException) -> ServiceUnavailable:
        reason = exc.reason if isinstance(exc, MaxRetryError) and exc.reason else exc
        if _timed_out(reason):
            return ServiceUnavailable(
                SERVICE, f"{self.endpoint}: no answer in {self.timeout_s:g} s"
            )
        return ServiceUnavailable(SERVICE, f"{self.endpoint}: {reason.__class__.__name__}")

    def _failed(self, exc: S3Error) -> ServiceUnavailable:
        """An S3 error answer (a server failing, refusing our keys…) with the server's words:
        an S3Error itself must not travel far (it is frozen, and its text is a debug dump)."""
        return ServiceUnavailable(
            SERVICE,
            f"{self.endpoint}: {exc.code}: {exc.message or 'no message'}",
            state="answered with an error",
        )

    # -- bucket ----------------------------------------------------------------------------
    def ensure_bucket(self) -> None:
        def run() -> None:
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as exc:
                    if exc.code not in _BUCKET_EXISTS:
                        raise

        self._call(run)

    def serves(self) -> None:
        """Raise unless the store lists the bucket (a listing of a prefix nothing is under)."""
        self._call(lambda: list(self.client.list_objects(self.bucket, prefix="ready-probe/")))

    def ping(self) -> None:
        if not self._call(lambda: self.client.bucket_exists(self.bucket)):
            raise ServiceUnavailable(SERVICE, f"bucket {self.bucket!r} does not exist")

    # -- objects ---------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        def run() -> bool:
            try:
                self.client.stat_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in _MISSING:
                    return False
                raise
            return True

        return self._call(run)

    def put_file(self, key: str, path: Path, size: int, content_type: str) -> None:
        with path.open("rb") as fh:
            self._call(
                lambda: self.client.put_object(
                    self.bucket, key, fh, size, content_type=content_type, part_size=PART_SIZE
                )
            )

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self._call(
            lambda: self.client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
            )
        )

    def put_json(self, key: str, document: Any) -> None:
        data = json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False).encode()
        self.put_bytes(key, data, "application/json")

    def get_bytes(self, key: str) -> bytes | None:
        def run() -> bytes | None:
            try:
                response = self.client.get_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in _MISSING:
                    return None
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call(run)

    def get_json(self, key: str) -> Any | None:
        data = self.get_bytes(key)
        return None if data is None else json.loads(data)

    def stream(self, key: str, offset: int = 0, length: int = 0) -> Iterator[bytes]:
        """The object's bytes in chunks; opens the connection before the first chunk is asked for,
        so a missing object or an unreachable store fails before a response has started."""
        response = self._call(
            lambda: self.client.get_object(self.bucket, key, offset=offset, length=length)
        )

        def chunks() -> Iterator[bytes]:
            try:
                yield from response.stream(CHUNK)
            except (Urllib3Error, OSError) as exc:  # the store stopped answering mid-transfer
                raise self._unreachable(exc) from exc
            finally:
                response.close()
                response.release_conn()

        return chunks()

    def delete(self, key: str) -> None:
        self._call(lambda: self.client.remove_object(self.bucket, key))

    def list_keys(self, prefix: str) -> Iterator[str]:
        for key, _ in self.list_sizes(prefix):
            yield key

    def list_sizes(self, prefix: str) -> list[tuple[str, int]]:
        """The objects under `prefix` with their sizes, by name."""
        objects = self._call(
            lambda: list(self.client.list_objects(self.bucket, prefix=prefix, recursive=True))
        )
        return sorted(
            (obj.object_name, int(obj.size or 0)) for obj in objects if obj.object_name is not None
        )

    def presigned_url(self, key: str, filename: str, expires: timedelta) -> str:
        disposition = f"attachment; filename*=UTF-8''{quote(filename)}"
        return self._call(
            lambda: self.client.presigned_get_object(
                self.bucket,
                key,
                expires=expires,
                response_headers={"response-content-disposition": disposition},
            )
        )

    # -- blobs -----------------------------------------------------------------------------
    def put_blob(self, sha256: str, path: Path, size: int, content_type: str) -> bool:
        """Store a blob unless it is already there. True when new bytes were written."""
        key = blob_key(sha256)
        if self.exists(key):
            return False
        self.put_file(key, path, size, content_type)
        return True

    def blob_size(self, sha256: str) -> int | None:
        """The stored blob's size, or None when there is no such blob."""

        def run() -> int | None:
            try:
                stat = self.client.stat_object(self.bucket, blob_key(sha256))
            except S3Error as exc:
                if exc.code in _MISSING:
                    return None
                raise
            return int(stat.size or 0)

        return self._call(run)

    def put_verified_blob(
        self, sha256: str, reader: BinaryIO, size: int, content_type: str
    ) -> None:
        """Store `size` bytes read from `reader` as the blob `sha256`, which they must be: the
        reader raises before the last byte is handed over when they are not, so the upload is
        abandoned and no object of that name appears (raises BlobMismatch)."""
        if size == 0 and sha256 != hashlib.sha256(b"").hexdigest():
            raise BlobMismatch(f"content-length is 0: no bytes were sent, which is not {sha256}")
        checked = _Verifying(reader, size, sha256)
        self._call(
            lambda: self.client.put_object(
                self.bucket,
                blob_key(sha256),
                checked,
                size,
                content_type=content_type,
                part_size=PART_SIZE,
            )
        )
        if checked.mismatch is not None:
            raise checked.mismatch

    def stream_blob(self, sha256: str) -> Iterator[bytes]:
        return self.stream(blob_key(sha256))


def from_settings(settings: Any) -> ObjectStore:
    return ObjectStore(bucket=settings.s3_bucket, timeout_s=settings.s3_timeout_s, **settings.s3)


class BlobMismatch(ValueError):
    """Bytes sent as a blob are not that blob (another size or SHA-256)."""


class _Verifying(io.RawIOBase):
    """A reader of exactly `size` bytes that checks their SHA-256 before giving the last one."""

    def __init__(self, inner: BinaryIO, size: int, sha256: str) -> None:
        self.inner, self.left, self.expected = inner, size, sha256
        self.digest = hashlib.sha256()
        self.mismatch: BlobMismatch | None = None

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        want = self.left if n is None or n < 0 else min(n, self.left)
        chunk = self.inner.read(want)
        if not chunk:
            self.mismatch = BlobMismatch(f"the upload ended {self.left} bytes short")
            raise self.mismatch
        self.left -= len(chunk)
        self.digest.update(chunk)
        if self.left == 0 and self.digest.hexdigest() != self.expected:
            self.mismatch = BlobMismatch(
                f"the bytes sent have SHA-256 {self.digest.hexdigest()}, not {self.expected}"
            )
            raise self.mismatch
        return chunk


MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest part but the last
SIGNED_PUT_S = 15 * 60  # how long S3 takes a signed request after its date


class _Abandoned(Exception):
    """The upload a held put belonged to was refused: its last bytes are never sent."""


class _Gate:
    """Decided once: release (True) or abandon (False)."""

    def __init__(self) -> None:
        self._decided = threading.Event()
        self.release = False

    @property
    def abandoned(self) -> bool:
        return self._decided.is_set() and not self.release

    def decide(self, release: bool) -> None:
        if not self._decided.is_set():
            self.release = release
            self._decided.set()

    def wait(self, timeout_s: float) -> bool:
        return self._decided.wait(timeout_s) and self.release


class _HeldReader(io.RawIOBase):
    """A staged file's bytes for the bucket's client, but for the last ones, which wait at the
    gate: abandoned, the read raises, and the client abandons the multipart upload (S3 then
    keeps nothing of it)."""

    def __init__(self, fh: BinaryIO, size: int, gate: _Gate, wait_s: float) -> None:
        self.fh, self.left, self.gate, self.wait_s = fh, size, gate, wait_s

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        want = self.left if n is None or n < 0 else min(n, self.left)
        if want >= self.left > 0 and not self.gate.wait(self.wait_s):
            raise _Abandoned
        chunk = self.fh.read(want)
        self.left -= len(chunk)
        return chunk


def _held_part_size(size: int) -> int:
    """A part size (≤ PART_SIZE, ≥ MIN_PART_SIZE) that leaves a last part of a few bytes: what
    waits for the verdict is then that part's request, not megabytes."""
    parts = -(-(size - 1) // PART_SIZE)
    return (size - 1) // parts


class HeldPuts:
    """Blob puts started before the upload they belong to is accepted: each sends all of its
    file but the last bytes (parts of a multipart upload, AT_ONCE puts at a time), and waits.
    `release` lets the kept ones finish and abandons the rest; `abandon` abandons all: an
    abandoned put fails before its last part, S3 drops what it had, and no blob of a refused
    upload appears. Files of MIN_PART_SIZE or less are not started
    early: their single PUT could hold nothing back."""

    def __init__(self, store: ObjectStore, wait_s: float = 600.0) -> None:
        self.store, self.wait_s = store, wait_s
        self.pool = ThreadPoolExecutor(max_workers=AT_ONCE, thread_name_prefix="held-put")
        self.started: dict[str, tuple[_Gate, Future[int]]] = {}  # sha256 -> gate, new bytes
        self.closed = False

    def start(self, sha256: str, path: Path, size: int, content_type: str) -> None:
        if self.closed or size <= MIN_PART_SIZE or sha256 in self.started:
            return
        gate = _Gate()
        # opened now: the staged file may be removed (replaced later in the upload) before the
        # put runs, while this content is still kept under another path
        fh = path.open("rb")
        future = self.pool.submit(self._put, gate, sha256, fh, size, content_type)
        self.started[sha256] = (gate, future)

    def _put(self, gate: _Gate, sha256: str, fh: BinaryIO, size: int, content_type: str) -> int:
        key = blob_key(sha256)
        with fh:
            if gate.abandoned or self.store.exists(key):
                return 0
            reader = _HeldReader(fh, size, gate, self.wait_s)
            try:
                self.store._call(
                    lambda: self.store.client.put_object(
                        self.store.bucket,
                        key,
                        reader,
                        size,
                        content_type=content_type,
                        part_size=_held_part_size(size),
                    )
                )
            except _Abandoned:
                return 0
        return size

    def release(self, kept: set[str]) -> dict[str, int]:
        """Let the puts of the `kept` contents finish and abandon the others; the new bytes of
        the kept ones by SHA-256. The first failure is raised."""
        self.closed = True
        for sha, (gate, _) in self.started.items():
            gate.decide(sha in kept)
        try:
            return {
                sha: future.result() for sha, (_, future) in self.started.items() if sha in kept
            }
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Abandon every put not released, and wait until none is running."""
        self.closed = True
        for gate, _ in self.started.values():
            gate.decide(False)
        self.pool.shutdown(wait=True)


def at_once(work: Callable[[T], Any], items: Sequence[T]) -> list[Any]:
    """`work` (a request to the bucket) on each item, AT_ONCE at a time, results in order; the
    first failure is raised."""
    if len(items) < 2:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(AT_ONCE, len(items))) as pool:
        return list(pool.map(work, items))
