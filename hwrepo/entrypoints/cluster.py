"""`hwrepo cluster up`: hwrepo as a cluster on one machine, a rehearsal of a deployment on many —
a 3-node NATS JetStream cluster (sync_interval always; streams and KV buckets with 3 replicas),
the S3 server, PostgreSQL (given by URL), two API processes on two ports, two worker processes.

Each API process runs its own outbox relay and recorder; they share the database, so either
publishes what the other committed. Each worker process runs a planner and the job consumers;
JetStream hands each job to one of them. The same class starts the cluster in the tests, which
kill and restart its parts (`Cluster.nats[i]`, `.apis[i]`, `.workers[i]`, `.s3`).
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tenacity import retry, stop_after_delay, wait_fixed

from hwrepo.config import EmbeddedPorts, Settings
from hwrepo.entrypoints import embedded
from hwrepo.entrypoints.embedded import Server
from hwrepo.entrypoints.supervisor import wait_ready
from hwrepo.service_layer import bootstrap

NODES = 3


@dataclass
class NatsNode:
    name: str
    port: int
    cluster_port: int


@dataclass
class Cluster:
    """The parts of a cluster in `root` (created when missing; its secrets kept there)."""

    root: Path
    database_url: str
    apis: list[Server] = field(default_factory=list)
    workers: list[Server] = field(default_factory=list)
    nats: list[Server] = field(default_factory=list)
    s3: Server | None = None
    api_ports: list[int] = field(default_factory=list)
    # which NATS nodes each API process connects to (None: all of them)
    api_nats: list[list[int]] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    worker_cache_dir: Path | None = None

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)
        self.secrets = self._secrets()
        ports = self.secrets["ports"]
        self.nodes = [
            NatsNode(f"hwrepo-{i + 1}", ports["nats"][i], ports["nats_cluster"][i])
            for i in range(NODES)
        ]
        self.s3_ports = EmbeddedPorts(**ports["s3"])
        self.api_ports = ports["api"]

    # -- configuration ---------------------------------------------------------------------
    def _secrets(self) -> dict:  # type: ignore[type-arg]
        """Passwords, keys and ports, made once per cluster directory (0600)."""
        path = self.root / "cluster.json"
        if path.exists():
            return json.loads(path.read_text())
        free = embedded.free_ports(2 * NODES + 2 + len(EmbeddedPorts().named()))
        s3_names = [n for n in EmbeddedPorts().named() if n != "nats"]
        doc = {
            "nats_password": secrets.token_urlsafe(24),
            "route_password": secrets.token_urlsafe(24),
            "s3_access_key": "hwrepo" + secrets.token_hex(6),
            "s3_secret_key": secrets.token_urlsafe(30),
            "ports": {
                "nats": free[:NODES],
                "nats_cluster": free[NODES : 2 * NODES],
                "api": free[2 * NODES : 2 * NODES + 2],
                "s3": dict(zip(s3_names, free[2 * NODES + 2 :], strict=False)),
            },
        }
        embedded._private_file(path, json.dumps(doc, indent=1))
        return doc

    def nats_urls(self, nodes: list[int] | None = None) -> list[str]:
        chosen = range(NODES) if nodes is None else nodes
        return [f"nats://127.0.0.1:{self.nodes[i].port}" for i in chosen]

    def settings(self, *, nodes: list[int] | None = None, data_dir: Path | None = None) -> Settings:
        """How a process of this cluster is configured (the tests use it for their clients)."""
        return Settings(
            data_dir=data_dir or self.root / "client",
            s3_endpoint=f"http://127.0.0.1:{self.s3_ports.s3}",
            s3_access_key=self.secrets["s3_access_key"],
            s3_secret_key=self.secrets["s3_secret_key"],
            nats_urls=self.nats_urls(nodes),
            nats_user="hwrepo",
            nats_password=self.secrets["nats_password"],
            nats_stream_replicas=NODES,
            database_url=self.database_url,
            seed_demo_projects=False,
        )

    def _env(self, settings: Settings, **more: str) -> dict[str, str]:
        env = {**settings.as_environment(), **self.extra_env, **more}
        if self.worker_cache_dir is not None:
            env["HWREPO_WORKER_CACHE_DIR"] = str(self.worker_cache_dir)
        return env

    # -- the parts -------------------------------------------------------------------------
    def _nats_node(self, i: int) -> Server:
        node = self.nodes[i]
        store = embedded._private_dir(self.root / "nats" / node.name)
        route_password = self.secrets["route_password"]
        routes = "\n".join(
            f"    nats-route://route:{route_password}@127.0.0.1:{other.cluster_port}"
            for other in self.nodes
            if other is not node
        )
        conf = embedded._private_file(
            store / "nats-server.conf",
            embedded._template(
                "nats-cluster-node.conf",
                server_name=node.name,
                port=node.port,
                cluster_port=node.cluster_port,
                store_dir=store,
                password=json.dumps(self.secrets["nats_password"]),
                route_password=json.dumps(route_password),
                routes=routes,
            ),
        )
        return Server(
            name=f"nats {node.name}",
            argv=[embedded.tool("nats-server"), "-c", str(conf)],
            ready_port=node.port,
            log_path=self.root / "logs" / f"{node.name}.log",
        )

    def _api(self, i: int) -> Server:
        nodes = self.api_nats[i] if self.api_nats else None
        settings = self.settings(nodes=nodes, data_dir=self.root / f"api-{i + 1}")
        return Server(
            name=f"API {i + 1}",
            argv=[sys.executable, "-m", "hwrepo.entrypoints.cli", "api"],
            ready_port=self.api_ports[i],
            log_path=self.root / "logs" / f"api-{i + 1}.log",
            env=self._env(
                settings, HWREPO_API_PORT=str(self.api_ports[i]), HWREPO_API_HOST="127.0.0.1"
            ),
        )

    def _worker(self, i: int) -> Server:
        settings = self.settings(data_dir=self.root / f"worker-{i + 1}")
        return Server(
            name=f"worker {i + 1}",
            argv=[sys.executable, "-m", "hwrepo.entrypoints.cli", "worker"],
            ready_port=0,
            log_path=self.root / "logs" / f"worker-{i + 1}.log",
            env=self._env(settings),
        )

    @retry(stop=stop_after_delay(60), wait=wait_fixed(1), reraise=True)
    def _prepare(self) -> None:
        """Bucket, streams (R3), schema. JetStream answers "temporarily unavailable" until the
        nodes have found each other and elected a meta leader: retried meanwhile."""
        bootstrap.prepare(self.settings(), seed=False)

    def api_url(self, i: int = 0) -> str:
        return f"http://127.0.0.1:{self.api_ports[i]}"

    def start(self, *, workers: int = 2, apis: int = 2) -> None:
        """Start everything and return when every API answers /readyz with 200."""
        self.nats = [self._nats_node(i) for i in range(NODES)]
        for node in self.nats:
            node.start()
        self.s3 = embedded.s3_server(
            self.root / "s3",
            self.s3_ports,
            self.secrets["s3_access_key"],
            self.secrets["s3_secret_key"],
        )
        self.s3.start()
        self._prepare()
        self.apis = [self._api(i) for i in range(apis)]
        for api in self.apis:
            api.start()
        self.workers = [self._worker(i) for i in range(workers)]
        for worker in self.workers:
            worker.start()
        for i, api in enumerate(self.apis):
            wait_ready(
                f"{self.api_url(i)}/readyz",
                90,
                alive=api.alive,
                stopping=threading.Event(),
                log_path=api.log_path,
            )

    def stop(self) -> None:
        for server in [*self.workers, *self.apis, self.s3, *self.nats]:
            if server is not None:
                server.stop()

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
