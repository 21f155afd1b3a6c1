"""``deer-reid db ...``: the embedded PostgreSQL (default) or $DATABASE_URL, and its migrations."""

from __future__ import annotations

import os

import click

from deer_reid_assets.core.store import db

from .common import CliError, engine, fail_cleanly, main


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
    from deer_reid_assets.defs.instance import forget_stale_instance

    server = db.embedded()
    click.echo("stopped" if server.stop() else f"not running ({server.pgdata})")
    if forget_stale_instance():
        click.echo("removed the Dagster instance lines earlier versions wrote into .env")


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
@click.option("--baseline", metavar="VERSION", help="The database already has the existing system's levels "
              "001..VERSION (each is checked by shape before it is recorded), then run the rest.")
@click.option("--adopt", is_flag=True, help="Adopt the existing system's live database: recognise by shape which "
              "of its migrations are there, record them, apply only the missing ones (each in a transaction).")
@click.option("--dry-run", is_flag=True, help="With --adopt: print the plan and change nothing.")
@fail_cleanly
def db_migrate(baseline: str | None, adopt: bool, dry_run: bool) -> None:
    """Apply pending migrations (starts the embedded PostgreSQL when needed)."""
    from deer_reid_assets.core.store import migrations

    if dry_run and not adopt:
        raise click.UsageError("--dry-run goes with --adopt")
    if adopt and baseline:
        raise click.UsageError("--adopt finds the baseline itself; leave out --baseline")
    eng = db.make_engine(db.database_url())
    if adopt:
        from deer_reid_assets.core.store import adopt as adopting

        steps = adopting.adopt(eng, dry_run=dry_run)
        for step in steps:
            click.echo(("would " if dry_run and step.action != "already recorded" else "") + step.line())
        todo = sum(s.action != "already recorded" for s in steps)
        click.echo(f"{'plan' if dry_run else 'done'}: {sum(s.action == 'record' for s in steps)} recorded as "
                   f"already there, {sum(s.action == 'apply' for s in steps)} applied"
                   + ("" if todo else "; database is up to date") + ("; nothing was changed" if dry_run else ""))
        return
    done = migrations.migrate(eng, baseline=baseline)
    click.echo(f"applied {len(done)} migration(s)" + (": " + ", ".join(done) if done else "; database is up to date"))


@main.command("cutover")
@click.option("--undo", is_flag=True, help="Put back what the last cut-over replaced; the existing system's worker "
              "owns live matching again.")
@click.option("--reassign", is_flag=True, help="Also change the worker's automatic assignments where our matcher "
              "disagrees (reviewed and manual ones are never changed).")
@fail_cleanly
def cutover_command(undo: bool, reassign: bool) -> None:
    """Switch live matching from the existing system's worker to this pipeline (profiles into its deer
    columns, proposals written to detections.deer_id), keeping what is replaced for --undo."""
    from deer_reid_assets.core import coexistence

    eng = engine()
    if undo:
        n = coexistence.undo_cutover(eng)
        click.echo(f"cut-over undone: deer vectors restored, {n} detection(s) given back their previous deer; "
                   "live matching is the existing system's again")
        return
    r = coexistence.cutover(eng, reassign=reassign)
    click.echo(f"cut-over {r.cutover_id}: kept {r.deer_kept} deer rows' vectors, mirrored {r.profiles_mirrored} "
               f"profile vector(s) onto its deer columns, wrote {r.assignments_written} proposal(s) to "
               f"detections.deer_id; {r.kept_worker_assignments} automatic assignment(s) of the worker left as they are"
               + ("" if not r.kept_worker_assignments else " (use --reassign to change them)"))

