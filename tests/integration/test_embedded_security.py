"""What another local user can do with the embedded servers' ports: nothing without credentials.

Every local user can reach 127.0.0.1. The embedded S3 server (`weed mini`) is started as the
fixtures start it, an object is stored through S3, and then every TCP port the weed process
listens on — found in /proc, so that a port a later SeaweedFS opens is probed too — gets
unauthenticated requests that would read (filer paths, directory listings, volume reads of the
object's own chunk, master lookups and assignments) or write and delete (filer uploads and
deletes, volume writes, master collection deletes, anonymous S3 calls, WebDAV). None may return
the object, its key or a listing, none may change anything, and the object is intact afterwards.
The gRPC ports must refuse HTTP/2 to a client without the data directory's certificate (and
accept it with that certificate, so the probe is known to work). The nats-server is checked the
same way: one port, which wants the password.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import secrets
import socket
import ssl
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from minio import Minio
from minio.error import S3Error

from hwrepo.config import EmbeddedPorts
from hwrepo.entrypoints import embedded
from tests.conftest import start_s3_server

# Pages that answer without credentials and hold neither object data nor names (see the README):
# (role of the port, path) -> why it may answer 2xx.
STATUS_PAGES = {
    ("s3", "/status"),
    ("s3", "/healthz"),
    ("master", "/"),  # the master's status page: version, volume counts, topology
    ("master", "/ui/index.html"),
    ("master", "/cluster/status"),  # leader address, highest volume id
    ("master", "/cluster/healthz"),
    ("master", "/healthz"),
    ("volume", "/status"),  # disk usage, volume ids, sizes and file counts
    ("volume", "/healthz"),
    ("admin", "/health"),
    ("admin", "/metrics"),  # the maintenance scanner's counters
}

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


# -- what the processes listen on ------------------------------------------------------------


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def listening_tcp(pid: int) -> dict[int, str]:
    """Every TCP port process `pid` listens on, with its address as /proc/net shows it."""
    inodes = _socket_inodes(pid)
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found[int(port, 16)] = address
    return found


def listening_unix(pid: int) -> list[str]:
    """The paths of the unix sockets process `pid` listens on (abstract ones start with @)."""
    inodes = _socket_inodes(pid)
    paths = []
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        flags, inode = int(fields[3], 16), fields[6]
        if inode in inodes and flags & 0x10000 and len(fields) > 7:  # __SO_ACCEPTCON
            paths.append(fields[7])
    return paths


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1 in /proc/net


# -- clients without credentials --------------------------------------------------------------


def http_request(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes] | None:
    """(status, body) of one plain HTTP request, None when the port does not speak HTTP."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(2_000_000)
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def multipart(name: str, content: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = "probe" + secrets.token_hex(8)
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def h2_settings(port: int, *, tls: bool, cert: tuple[Path, Path] | None = None) -> bool:
    """Whether the port starts an HTTP/2 session (answers the client preface with a SETTINGS
    frame), as a gRPC server does for a client it accepts: in clear text, or over TLS with or
    without a client certificate."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            conn: socket.socket = raw
            if tls:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                context.set_alpn_protocols(["h2"])
                if cert is not None:
                    context.load_cert_chain(*cert)
                conn = context.wrap_socket(raw)
            conn.sendall(H2_PREFACE)
            head = conn.recv(9)
    except (OSError, ssl.SSLError):
        return False
    return len(head) == 9 and head[3] == 0x04


def weed_shell(master: str, commands: str, *, cwd: Path, timeout_s: float) -> str:
    """`weed shell` run in `cwd` (where it looks for security.toml), its output; a shell that
    cannot connect waits for ever, so it is stopped after `timeout_s`."""
    try:
        done = subprocess.run(
            [embedded.tool("weed"), "shell", f"-master={master}"],
            input=commands,
            cwd=cwd,
            env={**os.environ, "HOME": str(cwd)},
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        return done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:  # its output is bytes here, whatever `text` says
        return b"".join(x for x in (exc.stdout, exc.stderr) if isinstance(x, bytes)).decode()


# -- the server under test --------------------------------------------------------------------


@dataclass
class Stored:
    server: embedded.Server
    ports: EmbeddedPorts
    client: Minio
    bucket: str
    key: str
    content: bytes
    fid: str  # the volume server's id of the object's one chunk
    data_dir: Path
    access_key: str

    @property
    def roles(self) -> dict[int, str]:
        return {port: role.removesuffix("_grpc") for role, port in self.ports.named().items()}

    @property
    def grpc_ports(self) -> set[int]:
        return {port for role, port in self.ports.named().items() if role.endswith("_grpc")}

    @property
    def master(self) -> str:
        return f"127.0.0.1:{self.ports.master}.{self.ports.master_grpc}"

    @property
    def security_dir(self) -> Path:
        assert self.server.cwd is not None
        return self.server.cwd

    def intact(self) -> None:
        got = self.client.get_object(self.bucket, self.key)
        try:
            assert got.read() == self.content
        finally:
            got.close()
            got.release_conn()
        keys = [o.object_name for o in self.client.list_objects(self.bucket, recursive=True)]
        assert keys == [self.key]


def _wait_listening(pid: int, ports: set[int], timeout_s: float = 30) -> dict[int, str]:
    """weed opens its admin ports only after S3 answers: wait for every configured one."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = listening_tcp(pid)
        if ports <= found.keys():
            return found
        assert time.monotonic() < deadline, f"not listening: {ports - found.keys()}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, s3_keys: dict[str, str]) -> Iterator[Stored]:
    data_dir = tmp_path_factory.mktemp("secured-s3")
    server = start_s3_server(data_dir, s3_keys)
    try:
        assert server.process is not None
        ports = EmbeddedPorts(**_ports_of(server))
        _wait_listening(server.process.pid, set(ports.named().values()) - {ports.nats})
        client = Minio(
            f"127.0.0.1:{ports.s3}",
            access_key=s3_keys["access_key"],
            secret_key=s3_keys["secret_key"],
            secure=False,
        )
        bucket = "probe-" + uuid.uuid4().hex[:12]
        client.make_bucket(bucket)
        key = f"users/u{uuid.uuid4().hex}.json"
        content = json.dumps({"token_digest": secrets.token_hex(32)}).encode()
        client.put_object(bucket, key, io.BytesIO(content), len(content))
        assert server.cwd is not None  # s3-security/, with the client certificate
        master = f"127.0.0.1:{ports.master}.{ports.master_grpc}"
        meta = weed_shell(
            master, f"fs.meta.cat /buckets/{bucket}/{key}\n", cwd=server.cwd, timeout_s=30
        )
        found = re.search(r'"fileId":\s*"(\d+,[0-9a-f]+)"', meta)
        assert found, f"weed shell with the certificate could not read the entry:\n{meta}"
        yield Stored(
            server=server,
            ports=ports,
            client=client,
            bucket=bucket,
            key=key,
            content=content,
            fid=found.group(1),
            data_dir=data_dir,
            access_key=s3_keys["access_key"],
        )
    finally:
        server.stop()


def _ports_of(server: embedded.Server) -> dict[str, int]:
    """The ports the fixture chose, read back from weed's command line (-master.port=…)."""
    ports = {}
    for name in EmbeddedPorts.model_fields:
        if name == "nats":
            continue
        role, _, grpc = name.partition("_")
        flag = f"-{role}.port{'.grpc' if grpc else ''}="
        (value,) = [a.removeprefix(flag) for a in server.argv if a.startswith(flag)]
        ports[name] = int(value)
    return ports


# -- the tests --------------------------------------------------------------------------------


def test_weed_listens_on_loopback_only_and_its_unix_sockets_are_private(stored: Stored) -> None:
    assert stored.server.process is not None
    pid = stored.server.process.pid
    tcp = listening_tcp(pid)
    assert set(stored.ports.named().values()) - {stored.ports.nats} <= tcp.keys()
    assert all(address in LOOPBACK for address in tcp.values()), tcp
    unix = listening_unix(pid)
    assert unix, "weed mini was expected to listen on unix sockets too"
    for path in unix:
        assert not path.startswith("@"), f"abstract unix socket (no permissions): {path}"
        info = os.stat(path)
        assert info.st_uid == os.getuid(), path
        assert stat.S_IMODE(info.st_mode) & 0o077 == 0, f"{path}: {oct(info.st_mode)}"


def test_secrets_of_the_s3_server_are_private(stored: Stored) -> None:
    for path in (
        stored.data_dir / "secrets.toml",
        stored.security_dir / "security.toml",
        stored.security_dir / "tls" / "node.key",
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for directory in (stored.data_dir / "s3", stored.security_dir, stored.security_dir / "tls"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert not (stored.security_dir / "tls" / "ca.key").exists(), "the CA's key must be gone"
    text = (stored.security_dir / "security.toml").read_text()
    log = stored.server.log_path.read_text(errors="replace")
    for key in re.findall(r'^key = "([^"]+)"$', text, flags=re.M):
        if not key.startswith("/"):  # the JWT signing keys, not the paths of TLS files
            assert key not in log


def _read_probes(s: Stored) -> list[tuple[str, str]]:
    directory = s.key.rsplit("/", 1)[0]
    volume_id = s.fid.split(",")[0]
    paths = [
        "/",
        "/buckets/",
        f"/buckets/{s.bucket}/",
        f"/buckets/{s.bucket}/{directory}/",
        f"/buckets/{s.bucket}/{directory}/?pretty=y&limit=100",
        f"/buckets/{s.bucket}/{s.key}",
        f"/buckets/{s.bucket}/{s.key}?metadata=true",
        f"/{s.bucket}/{s.key}",
        f"/{s.bucket}?list-type=2",
        f"/{s.bucket}/",
        "/etc/iam/identity.json",
        "/topics/.system/log/",
        f"/{s.fid}",
        f"/{s.fid}?readDeleted=true",
        f"/dir/lookup?volumeId={volume_id}",
        f"/dir/lookup?fileId={s.fid}",
        "/dir/assign",
        "/dir/status",
        "/vol/status",
        "/cluster/status",
        "/status",
        "/stats/counter",
        "/stats/disk",
        "/metrics",
        "/ui/index.html",
        "/healthz",
        "/health",
        "/api/cluster/topology",
        "/api/s3/users",
        "/debug/pprof/",
    ]
    return [("GET", p) for p in paths] + [("PROPFIND", "/"), ("PROPFIND", f"/buckets/{s.bucket}/")]


def _secrets_of(s: Stored, path: str) -> list[bytes]:
    """What no unauthenticated answer may hold: the object's bytes, and its name or its chunk's
    id unless the request itself named them (error pages echo the path they refuse)."""
    name = s.key.rsplit("/", 1)[1]
    told = [name, s.fid]
    return [s.content, json.loads(s.content)["token_digest"].encode()] + [
        x.encode() for x in told if x not in path
    ]


def _allowed(s: Stored, port: int, path: str, status: int) -> bool:
    return not 200 <= status < 300 or (s.roles.get(port, "unknown"), path) in STATUS_PAGES


def test_no_port_gives_the_object_or_a_listing_without_credentials(stored: Stored) -> None:
    assert stored.server.process is not None
    ports = listening_tcp(stored.server.process.pid)
    answered = []
    for port in ports:
        for method, path in _read_probes(stored):
            headers = {"Depth": "1"} if method == "PROPFIND" else {}
            result = http_request(port, method, path, headers=headers)
            if result is None:
                continue
            status, body = result
            answered.append((port, path))
            for secret in _secrets_of(stored, path):
                assert secret not in body, f"{method} :{port}{path} ({status}) gave it away"
            assert _allowed(stored, port, path, status), (
                f"{method} :{port} ({stored.roles.get(port, 'unknown')}){path} answered "
                f"{status}: {body[:300]!r}"
            )
    assert any(port == stored.ports.volume for port, _ in answered), "the volume port was probed"
    stored.intact()


def _write_probes(s: Stored) -> list[tuple[str, str, bytes, dict[str, str]]]:
    directory = s.key.rsplit("/", 1)[0]
    volume_id = s.fid.split(",")[0]
    junk = b"written by nobody " + secrets.token_bytes(8)
    form, form_headers = multipart("planted.json", junk)
    raw = {"Content-Type": "application/octet-stream"}
    iam = {"Content-Type": "application/x-www-form-urlencoded"}
    create_key = b"Action=CreateAccessKey&UserName=hwrepo&Version=2010-05-08"
    probes = [
        ("POST", f"/buckets/{s.bucket}/{directory}/", form, form_headers),
        ("POST", f"/buckets/{s.bucket}/{directory}/planted.json", form, form_headers),
        ("PUT", f"/buckets/{s.bucket}/{directory}/planted.json", junk, raw),
        ("POST", "/submit", form, form_headers),
        ("POST", f"/{s.fid}", form, form_headers),
        ("PUT", f"/{s.fid}", junk, raw),
        ("POST", f"/{volume_id},0a0000000012345678", form, form_headers),
        ("PUT", f"/{s.bucket}/{directory}/planted.json", junk, raw),
        ("POST", f"/{s.bucket}", form, form_headers),
        ("POST", "/", create_key, iam),
        ("MKCOL", f"/buckets/{s.bucket}/planted/", b"", {}),
        ("POST", "/dir/assign", b"", {}),
        ("POST", f"/vol/grow?collection={s.bucket}&count=1", b"", {}),
        ("POST", "/vol/vacuum?garbageThreshold=0.0001", b"", {}),
        ("POST", f"/col/delete?collection={s.bucket}", b"", {}),
        ("GET", f"/col/delete?collection={s.bucket}", b"", {}),
        ("DELETE", f"/{s.fid}", b"", {}),
        ("DELETE", f"/buckets/{s.bucket}/{s.key}", b"", {}),
        ("DELETE", f"/buckets/{s.bucket}/{directory}/?recursive=true", b"", {}),
        ("DELETE", f"/buckets/{s.bucket}?recursive=true", b"", {}),
        ("DELETE", f"/{s.bucket}/{s.key}", b"", {}),
        ("DELETE", f"/{s.bucket}", b"", {}),
    ]
    return probes


def test_no_port_writes_or_deletes_without_credentials(stored: Stored) -> None:
    assert stored.server.process is not None
    for port in listening_tcp(stored.server.process.pid):
        for method, path, body, headers in _write_probes(stored):
            result = http_request(port, method, path, body, headers)
            if result is None:
                continue
            status, answer = result
            assert _allowed(stored, port, path.split("?")[0], status), (
                f"{method} :{port} ({stored.roles.get(port, 'unknown')}){path} answered "
                f"{status}: {answer[:300]!r}"
            )
    stored.intact()
    # and through the volume server directly: the chunk is still there, unchanged
    meta = weed_shell(
        stored.master,
        f"fs.meta.cat /buckets/{stored.bucket}/{stored.key}\n",
        cwd=stored.security_dir,
        timeout_s=30,
    )
    assert stored.fid in meta


def test_the_s3_port_refuses_anonymous_reads_and_writes(stored: Stored) -> None:
    s3, bucket, key = stored.ports.s3, stored.bucket, stored.key
    for method, path in [
        ("GET", f"/{bucket}/{key}"),
        ("HEAD", f"/{bucket}/{key}"),
        ("GET", f"/{bucket}?list-type=2"),
        ("GET", f"/{bucket}"),
        ("GET", "/"),
        ("PUT", f"/{bucket}/{key}"),
        ("PUT", f"/{bucket}/planted.json"),
        ("DELETE", f"/{bucket}/{key}"),
        ("DELETE", f"/{bucket}"),
        ("PUT", "/planted-bucket"),
    ]:
        result = http_request(s3, method, path, b"x" if method == "PUT" else b"")
        assert result is not None
        status, body = result
        assert status in (400, 401, 403), (method, path, status, body[:300])
        assert stored.content not in body
    # a presigned URL signed with a wrong secret is refused too
    forged = Minio(
        f"127.0.0.1:{s3}",
        access_key=stored.access_key,
        secret_key="not-it",
        secure=False,
        region="us-east-1",  # no region look-up, which the wrong secret would fail already
    )
    url = forged.presigned_get_object(bucket, key).removeprefix(f"http://127.0.0.1:{s3}")
    result = http_request(s3, "GET", url)
    assert result is not None and result[0] == 403, result
    assert stored.client.bucket_exists("planted-bucket") is False
    stored.intact()


def test_grpc_ports_want_the_data_directorys_client_certificate(stored: Stored) -> None:
    assert stored.server.process is not None
    tls = stored.security_dir / "tls"
    cert = (tls / "node.crt", tls / "node.key")
    for port in listening_tcp(stored.server.process.pid):
        assert not h2_settings(port, tls=False), f"port {port} speaks clear-text HTTP/2 (gRPC)"
        assert not h2_settings(port, tls=True), f"port {port} takes TLS without a certificate"
    for port in stored.grpc_ports:  # the probe itself works: with the certificate they answer
        assert h2_settings(port, tls=True, cert=cert), port

    # weed shell, the admin client of every gRPC API, without the certificate: nothing
    directory = stored.key.rsplit("/", 1)[0]
    stranger = stored.data_dir / "stranger"
    stranger.mkdir()
    out = weed_shell(
        stored.master,
        f"fs.ls -l /buckets/{stored.bucket}/{directory}\n"
        f"fs.rm -r /buckets/{stored.bucket}/{directory}\n"
        "s3.configure -user=planted -access_key=planted -secret_key=planted-secret-key "
        "-actions=Admin -apply\n",
        cwd=stranger,
        timeout_s=6,
    )
    assert stored.key.rsplit("/", 1)[1] not in out
    stored.intact()
    planted = Minio(
        f"127.0.0.1:{stored.ports.s3}",
        access_key="planted",
        secret_key="planted-secret-key",
        secure=False,
    )
    with pytest.raises(S3Error):
        planted.list_buckets()

    # with it (from the data directory), the same shell lists the object
    listing = weed_shell(
        stored.master,
        f"fs.ls -l /buckets/{stored.bucket}/{directory}\n",
        cwd=stored.security_dir,
        timeout_s=30,
    )
    assert stored.key.rsplit("/", 1)[1] in listing


# -- NATS ---------------------------------------------------------------------------------------


async def _nats_connects(port: int, **credentials: str) -> bool:
    try:
        nc = await nats.connect(
            f"nats://127.0.0.1:{port}",
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
            **credentials,
        )
    except Exception:
        return False
    await nc.close()
    return True


async def test_nats_has_one_port_and_it_wants_the_password(tmp_path: Path) -> None:
    password = secrets.token_urlsafe(24)
    (port,) = embedded.free_ports(1)
    server = embedded.nats_server(tmp_path / "nats-data", port, password)
    server.start()
    try:
        assert server.process is not None
        time.sleep(0.5)  # anything it would open besides the client port is open by now
        tcp = listening_tcp(server.process.pid)
        assert tcp.keys() == {port}, f"nats-server listens on {sorted(tcp)} (monitoring?)"
        assert all(address in LOOPBACK for address in tcp.values()), tcp
        assert listening_unix(server.process.pid) == []
        for path in ("/varz", "/connz", "/jsz", "/"):
            result = http_request(port, "GET", path)
            assert result is None or not 200 <= result[0] < 300, (path, result)
        assert not await _nats_connects(port)
        assert not await _nats_connects(port, user="hwrepo", password="wrong")
        assert not await _nats_connects(port, user="admin", password=password)
        assert await _nats_connects(port, user="hwrepo", password=password)
    finally:
        server.stop()
