"""The `hwrepo` command."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hwrepo.domain.errors import HwrepoError
from hwrepo.entrypoints import client_cli, kicad_cli

# The server side (settings, index, storage, set-up) is imported by the commands that use it:
# the client commands (`hwrepo push` in a CI job) start without it.
if TYPE_CHECKING:
    from hwrepo.config import Settings
    from hwrepo.service_layer.backends import Backends

app = typer.Typer(
    pretty_exceptions_enable=False,
    help="hwrepo: an event-driven repository for open hardware.",
    no_args_is_help=True,
)
users_app = typer.Typer(pretty_exceptions_enable=False, help="Manage users.", no_args_is_help=True)
tokens_app = typer.Typer(
    pretty_exceptions_enable=False, help="Manage API tokens.", no_args_is_help=True
)
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
client_cli.register(app)
kicad_cli.register(app)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default ./.hwrepo; env HWREPO_DATA_DIR)"),
]


def _settings(data_dir: Path | None, **extra: object) -> Settings:
    from hwrepo.config import load_settings

    return load_settings(data_dir=data_dir, **extra)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@contextmanager
def _backends(settings: Settings) -> Iterator[Backends]:
    """Backends for a one-off command. When the embedded S3 server is not running (no `hwrepo up`),
    it is started for the duration of the command, and the command waits (up to 60 s) until it
    serves requests. A failure of the store is one line naming it, with the server's words."""
    from minio.error import MinioException

    from hwrepo.entrypoints import embedded
    from hwrepo.service_layer import bootstrap
    from hwrepo.service_layer.backends import Backends

    started = []
    try:
        if settings.embedded_s3 and not embedded.answers(settings.embedded.s3):
            server = next(
                s
                for s in embedded.embedded_servers(settings)
                if s.ready_port == settings.embedded.s3
            )
            embedded.check_ports(
                {k: v for k, v in embedded.embedded_ports(settings).items() if "S3" in k},
                "set HWREPO_EMBEDDED__<NAME>=PORT",
            )
            server.start()
            started.append(server)
        backends = Backends.from_settings(settings)
        if started:  # a server that was just started answers before it can make buckets
            bootstrap.ensure_bucket(backends)
        else:
            backends.store.ensure_bucket()
        try:
            yield backends
        finally:
            backends.close()
    except HwrepoError as exc:
        _fail(exc.detail)
    except (embedded.StartFailed, embedded.PortInUse) as exc:
        _fail(str(exc))
    except MinioException as exc:  # the store's adapter translates these; never a traceback
        _fail(f"S3 object storage: {exc}")
    finally:
        for server in started:
            server.stop()


@app.command()
def up(
    data_dir: DataDir = None,
    port: Annotated[int | None, typer.Option(help="API port (default 8080)")] = None,
    host: Annotated[str | None, typer.Option(help="API address (default 127.0.0.1)")] = None,
    seed: Annotated[bool, typer.Option(help="Publish designs/ into an empty repository")] = True,
) -> None:
    """Run the whole system: embedded servers (unless external ones are configured) and the API."""
    from hwrepo.entrypoints.supervisor import Supervisor

    settings = _settings(data_dir, api_port=port, api_host=host, seed_demo_projects=seed)
    raise typer.Exit(Supervisor(settings).run())


cluster_app = typer.Typer(help="hwrepo as a cluster on one machine (a rehearsal of many)")
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("up")
def cluster_up(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the cluster keeps its data, secrets and logs")
    ] = Path(".hwrepo-cluster"),
    database_url: Annotated[
        str,
        typer.Option(
            envvar="HWREPO_DATABASE_URL",
            help="PostgreSQL for the index (e.g. postgresql://user@127.0.0.1:5432/hwrepo)",
        ),
    ] = "",
    workers: Annotated[int, typer.Option(help="Worker processes")] = 2,
) -> None:
    """Start a 3-node NATS JetStream cluster, the S3 server, two API processes and the worker
    processes against a PostgreSQL you name; Ctrl-C stops them all."""
    import signal
    import threading

    from hwrepo.entrypoints.cluster import Cluster
    from hwrepo.entrypoints.embedded import StartFailed

    if not database_url.startswith("postgresql"):
        typer.echo("error: give a PostgreSQL URL (--database-url or HWREPO_DATABASE_URL)", err=True)
        raise typer.Exit(1)
    cluster = Cluster(directory, database_url)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        cluster.start(workers=workers)
        for i in range(len(cluster.apis)):
            typer.echo(f"API {i + 1}: {cluster.api_url(i)}/")
        typer.echo(
            f"NATS: {', '.join(cluster.nats_urls())} (user hwrepo, see {directory}/cluster.json)"
        )
        typer.echo(f"logs: {directory}/logs   press Ctrl-C to stop")
        stop.wait()
    except StartFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        cluster.stop()


@app.command()
def api(data_dir: DataDir = None) -> None:
    """Run only the API server (with its outbox relay) against configured services."""
    import uvicorn

    from hwrepo.entrypoints.api.app import create_app

    settings = _settings(data_dir)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level="info",
        timeout_graceful_shutdown=10,
    )


@app.command()
def worker(
    data_dir: DataDir = None,
    kinds: Annotated[
        str | None, typer.Option(help="Comma-separated check kinds to take (default: all)")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="Jobs run at once")] = None,
    plan: Annotated[bool, typer.Option(help="Also plan revisions into checks")] = True,
) -> None:
    """Run a check worker (and planner): needs S3 and NATS, never the database."""
    from hwrepo.config import default_concurrency
    from hwrepo.entrypoints.worker import WorkerOptions, run_worker

    settings = _settings(data_dir)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    chosen = kinds.split(",") if kinds else settings.worker_kinds
    options = WorkerOptions(
        kinds=chosen,
        concurrency=concurrency or settings.worker_concurrency or default_concurrency(),
        max_attempts=settings.job_max_attempts,
        plan=plan,
        cancel_superseded=settings.cancel_superseded,
        ack_wait_s=settings.job_ack_wait_s,
    )
    try:
        run_worker(settings, options)
    except HwrepoError as exc:
        _fail(exc.detail)


@users_app.command("create")
def users_create(
    name: str,
    admin: Annotated[bool, typer.Option("--admin", help="Site administrator")] = False,
    data_dir: DataDir = None,
) -> None:
    """Create a user."""
    from hwrepo.service_layer import users as users_service

    with _backends(_settings(data_dir)) as backends:
        try:
            user = users_service.create_user(backends, name, admin=admin)
        except HwrepoError as exc:
            _fail(exc.detail)
    typer.echo(f"created user {user.name}{' (admin)' if user.admin else ''}", err=True)


@users_app.command("password")
def users_password(
    name: str,
    stdin: Annotated[
        bool, typer.Option("--stdin", help="Read the password from standard input")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Set the password user NAME signs in to the pages with (asked twice, or read from
    standard input with --stdin); signs the user out of every browser."""
    from hwrepo.service_layer import users as users_service

    if stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with _backends(_settings(data_dir)) as backends:
        try:
            users_service.set_password(backends, name, password)
        except HwrepoError as exc:
            _fail(exc.detail)
    typer.echo(f"set the password of {name}", err=True)


@tokens_app.command("create")
def tokens_create(
    name: str,
    token_name: Annotated[str, typer.Option("--name", help="A label for the token")] = "cli",
    scope: Annotated[str, typer.Option(help="read, write or checks")] = "write",
    expires_days: Annotated[int | None, typer.Option(help="Expire after so many days")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create an API token for user NAME and print it (alone on its line, on stdout)."""
    from hwrepo.domain.model import utcnow
    from hwrepo.service_layer import users as users_service

    expires = utcnow() + timedelta(days=expires_days) if expires_days else None
    with _backends(_settings(data_dir)) as backends:
        try:
            token = users_service.create_token(
                backends, name, token_name, scope=scope, expires=expires
            )
        except HwrepoError as exc:
            _fail(exc.detail)
    sys.stdout.write(token + "\n")


@app.command()
def reindex(data_dir: DataDir = None) -> None:
    """Rebuild the metadata index from the manifests in S3."""
    from hwrepo.service_layer import reindex as reindexing

    with _backends(_settings(data_dir)) as backends:
        report = reindexing.reindex(backends)
    typer.echo(
        f"reindexed {report.users} users, {report.projects} projects, "
        f"{report.revisions} revisions, {report.checks} checks, {report.threads} review threads, "
        f"{report.verdicts} verdicts ({report.skipped} skipped)"
    )


@app.command()
def streams(data_dir: DataDir = None) -> None:
    """Create or update the JetStream streams (done by `hwrepo up` too)."""
    import asyncio

    from hwrepo.service_layer import bootstrap

    try:
        asyncio.run(bootstrap.ensure_streams(_settings(data_dir)))
    except HwrepoError as exc:
        _fail(exc.detail)


if __name__ == "__main__":
    app()
