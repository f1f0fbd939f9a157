"""The embedded default's servers: a nats-server and a SeaweedFS S3 server (`weed mini`), each a
child process bound to 127.0.0.1 with its data under the data directory.

Every local user can reach 127.0.0.1, so binding there protects nothing by itself: nats-server
wants a password, and of what `weed mini` serves only the S3 API is usable, with its keys (the
other HTTP APIs are switched off or want JWTs signed with keys of the data directory, the gRPC
ports want client certificates of a CA made for it; see services/seaweedfs-security.toml).

Used by `hwrepo up` and by the test fixtures, so the tests run exactly what users run.
The configuration templates live in services/.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hwrepo.config import EmbeddedPorts, Settings, load_secrets

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"
PR_SET_PDEATHSIG = 1


class PortInUse(RuntimeError):
    pass


class StartFailed(RuntimeError):
    pass


def tool(name: str) -> str:
    """A binary installed by a pip package into this virtual environment, else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise StartFailed(f"{name} is not installed: run the README's install command first")
    return found


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def check_ports(ports: dict[str, int], hint: str) -> None:
    busy = [f"{port} ({what})" for what, port in ports.items() if not port_free(port)]
    if busy:
        raise PortInUse(
            f"port{'s' if len(busy) > 1 else ''} {', '.join(busy)} already in use on 127.0.0.1. "
            f"Stop what is using {'them' if len(busy) > 1 else 'it'}, or {hint}"
        )


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free now (for tests)."""
    socks, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in socks:
        sock.close()
    return ports


def answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Server:
    """One child process with its log file."""

    name: str
    argv: list[str]
    ready_port: int  # 0: a process without a port (started = running)
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    umask: int | None = None  # of the child: the files and unix sockets it makes
    drop_env: tuple[str, ...] = ()  # prefixes of variables the child must not inherit
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout_s: float = 60) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(self.drop_env)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the supervisor, which stops us in order
                preexec_fn=_die_with_parent,
                env={**inherited, **(self.env or {})},
                cwd=self.cwd,
                umask=-1 if self.umask is None else self.umask,
            )
        deadline = time.monotonic() + timeout_s
        while self.ready_port and not answers(self.ready_port):
            if self.process.poll() is not None:
                raise StartFailed(
                    f"{self.name} exited with code {self.process.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise StartFailed(f"{self.name} did not answer on port {self.ready_port}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 10) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """Stop abruptly (tests of an unreachable service)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies, however it dies, so no
    server outlives a supervisor that was killed."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _template(name: str, **values: object) -> str:
    text = (SERVICES_DIR / name).read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def _private_dir(path: Path) -> Path:
    """A directory only its owner may enter (also when it was made before with another mode)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def _private_file(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    return path


def nats_server(data_dir: Path, port: int, password: str | None = None) -> Server:
    """A nats-server with JetStream; with `password`, clients must log in as user `hwrepo`
    (job sandboxes that may reach the network while installing packages get no free access)."""
    auth = ""
    if password:
        auth = "authorization {\n  user: hwrepo\n  password: " + json.dumps(password) + "\n}\n"
    conf = _private_file(
        data_dir / "nats" / "nats-server.conf",
        _template(
            "nats-server.conf", port=port, store_dir=(data_dir / "nats").resolve(), auth=auth
        ),
    )
    return Server(
        name="nats-server",
        argv=[tool("nats-server"), "-c", str(conf)],
        ready_port=port,
        log_path=data_dir / "logs" / "nats-server.log",
    )


# What the certificates of the embedded S3 server's gRPC ports are made with (see _certificates).
_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = hwrepo embedded S3
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[node]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""
_CERT_DAYS = 36500  # a data directory's own CA: it never needs to expire in a server's life


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise StartFailed(
            "openssl is not installed: run scripts/install (or apt-get install openssl)"
        )
    done = subprocess.run(
        [openssl, *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise StartFailed(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")


def _certificates(directory: Path) -> dict[str, Path]:
    """A CA certificate and one key and certificate signed by it (for servers and clients), for
    the gRPC ports of the embedded S3 server: made once per data directory, 0600 in a 0700
    directory. The CA's key is deleted as soon as it has signed, so no other certificate it
    accepts can ever be made."""
    files = {
        "ca": directory / "ca.crt",
        "cert": directory / "node.crt",
        "key": directory / "node.key",
    }
    if all(path.exists() for path in files.values()):
        return files
    _private_dir(directory)
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    days = ["-days", str(_CERT_DAYS)]
    with tempfile.TemporaryDirectory(dir=directory, prefix=".new-") as tmp_name:
        tmp = Path(tmp_name)  # 0700, as mkdtemp makes every directory
        _private_file(tmp / "openssl.cnf", _OPENSSL_CONFIG)
        ca = ["-config", "openssl.cnf", "-extensions", "ca", "-subj", "/CN=hwrepo embedded S3 CA"]
        _openssl(
            "req", "-x509", *ca, *new_key, *days, "-keyout", "ca.key", "-out", "ca.crt", cwd=tmp
        )
        node_key = ["-keyout", "node.key", "-out", "node.csr"]
        _openssl("req", "-new", "-config", "openssl.cnf", *new_key, *node_key, cwd=tmp)
        serial = "0x" + secrets.token_hex(8)
        signed = ["-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", serial, *days]
        node = ["-extfile", "openssl.cnf", "-extensions", "node"]
        _openssl("x509", "-req", "-in", "node.csr", *signed, *node, "-out", "node.crt", cwd=tmp)
        (tmp / "ca.key").unlink()
        for name in ("node.key", "node.crt", "ca.crt"):  # ca.crt last: it completes the set
            (tmp / name).chmod(0o600)
            os.replace(tmp / name, directory / name)
    return files


def s3_security(data_dir: Path) -> Path:
    """The embedded S3 server's security.toml (JWT signing keys from the data directory's
    secrets.toml, gRPC certificates from `tls/`) in the directory it returns: weed's working
    directory, where weed reads it (and where `weed shell` finds the client certificate)."""
    directory = _private_dir(data_dir.resolve() / "s3-security")
    tls = _certificates(directory / "tls")
    keys = load_secrets(data_dir)
    _private_file(
        directory / "security.toml",
        _template(
            "seaweedfs-security.toml",
            volume_write_key=json.dumps(keys["s3_jwt_volume_write"]),
            volume_read_key=json.dumps(keys["s3_jwt_volume_read"]),
            filer_write_key=json.dumps(keys["s3_jwt_filer_write"]),
            filer_read_key=json.dumps(keys["s3_jwt_filer_read"]),
            **{name: json.dumps(str(path)) for name, path in tls.items()},
        ),
    )
    return directory


def s3_server(data_dir: Path, ports: EmbeddedPorts, access_key: str, secret_key: str) -> Server:
    """`weed mini` serving S3 with these keys; its other ports closed (see s3_security)."""
    store = _private_dir((data_dir / "s3").resolve())
    identities = _private_file(
        data_dir / "s3-identities.json",
        _template("s3-identities.json", access_key=access_key, secret_key=secret_key),
    )
    security = s3_security(data_dir)
    argv = [
        tool("weed"),
        "mini",
        f"-dir={store}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={identities.resolve()}",
        "-disableHttp",  # the master's and the filer's HTTP APIs: S3 reaches them over gRPC
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.port={ports.s3}",
        f"-s3.port.grpc={ports.s3_grpc}",
        f"-master.port={ports.master}",
        f"-master.port.grpc={ports.master_grpc}",
        f"-volume.port={ports.volume}",
        f"-volume.port.grpc={ports.volume_grpc}",
        f"-filer.port={ports.filer}",
        f"-filer.port.grpc={ports.filer_grpc}",
        f"-admin.port={ports.admin}",
        f"-admin.port.grpc={ports.admin_grpc}",
        "-volume.max=0",
    ]
    return Server(
        name="S3 server (SeaweedFS)",
        argv=argv,
        ready_port=ports.s3,
        log_path=data_dir / "logs" / "s3.log",
        cwd=security,
        # Its unix sockets (/tmp/seaweedfs-*.sock) and data files: for this user alone.
        umask=0o077,
        # WEED_* would override security.toml; AWS_* and S3_* would add an S3 user or a bucket.
        drop_env=("WEED_", "AWS_", "S3_"),
    )


def embedded_servers(settings: Settings) -> list[Server]:
    """The servers this configuration needs started locally (none when all are external)."""
    servers = []
    data_dir = settings.data_dir
    if settings.embedded_nats:
        servers.append(
            nats_server(data_dir, settings.embedded.nats, settings.secrets["nats_password"])
        )
    if settings.embedded_s3:
        servers.append(
            s3_server(
                data_dir,
                settings.embedded,
                settings.secrets["s3_access_key"],
                settings.secrets["s3_secret_key"],
            )
        )
    return servers


def embedded_ports(settings: Settings) -> dict[str, int]:
    ports: dict[str, int] = {}
    if settings.embedded_nats:
        ports["embedded NATS"] = settings.embedded.nats
    if settings.embedded_s3:
        ports.update(
            {f"embedded S3 {k}": v for k, v in settings.embedded.named().items() if k != "nats"}
        )
    return ports
