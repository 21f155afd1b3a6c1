"""``deer-reid db ...``: the embedded PostgreSQL (default) or $DATABASE_URL, and its migrations."""

from __future__ import annotations

import os

import click

from deer_reid_assets.core.store import db

from .common import CliError, fail_cleanly, main


@main.group("db")
def db_group() -> None:
    """The database: the embedded PostgreSQL (default) or $DATABASE_URL."""


@db_group.command("start")
@fail_cleanly
def db_start() -> None:
    """Start the embedded PostgreSQL (no-op when running or when DATABASE_URL is set)."""
    from deer_reid_assets.defs.instance import prepare_dagster_home

    if os.environ.get("DATABASE_URL"):
        url = db.database_url()
        db.make_engine(url).dispose()
        click.echo(f"using DATABASE_URL ({db.redact(url)}); nothing to start")
    else:
        url = db.embedded().start()
        click.echo(f"embedded PostgreSQL running in {db.embedded().pgdata}")
    prepare_dagster_home(url)


@db_group.command("stop")
@fail_cleanly
def db_stop() -> None:
    """Stop the embedded PostgreSQL."""
    server = db.embedded()
    click.echo("stopped" if server.stop() else f"not running ({server.pgdata})")


@db_group.command("status")
@fail_cleanly
def db_status() -> None:
    """Where the database is, whether it answers, and the migrations applied."""
    from deer_reid_assets.core.store import migrations

    if not os.environ.get("DATABASE_URL") and not db.embedded().is_running():
        raise CliError(f"deer-reid: the embedded PostgreSQL in {db.embedded().pgdata} is not running "
                       "(deer-reid db start)")
    url = db.database_url(start_embedded=False)
    states = migrations.status(db.make_engine(url))
    applied = sum(1 for _, s in states if s != "pending")
    click.echo(f"database {db.redact(url)}: reachable; migrations {applied}/{len(states)} applied")
    for name, state in states:
        click.echo(f"  {state:8s} {name}")


@db_group.command("url")
@click.option("--dagster", is_flag=True, help="Print the URL of Dagster's instance storage instead.")
@fail_cleanly
def db_url(dagster: bool) -> None:
    """Print the SQLAlchemy URL of the application database."""
    url = db.database_url(start_embedded=False)
    click.echo(db.dagster_storage_url(url) if dagster else url)


@db_group.command("migrate")
@click.option("--baseline", metavar="VERSION", help="Adopt an existing database: record 001..VERSION as applied "
              "(after checking their tables exist), then run the rest.")
@fail_cleanly
def db_migrate(baseline: str | None) -> None:
    """Apply pending migrations (starts the embedded PostgreSQL when needed)."""
    from deer_reid_assets.core.store import migrations

    done = migrations.migrate(db.make_engine(db.database_url()), baseline=baseline)
    click.echo(f"applied {len(done)} migration(s)" + (": " + ", ".join(done) if done else "; database is up to date"))
