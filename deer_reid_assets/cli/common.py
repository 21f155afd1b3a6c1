"""What every command shares: the one-line errors, the database check, the Dagster instance and
``materialize`` of a selection of the asset graph."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

import click

from deer_reid_assets.core.store import db

LOG_INFO = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


class CliError(click.ClickException):
    """Printed as exactly its message (no 'Error:' prefix), exit status 1 (or ``exit_code``; see
    :mod:`deer_reid_assets.core.errors`)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(self.message, err=True, file=file)


def fail_cleanly(fn):
    """Turn the core's known errors into one-line CLI errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from deer_reid_assets.core.embed.versions import EmbeddingError
        from deer_reid_assets.core.ingest.imaging import ImageError
        from deer_reid_assets.core.ingest.importer import SidecarError
        from deer_reid_assets.core.store.migrations import MigrationError

        try:
            return fn(*args, **kwargs)
        except (db.DatabaseError, MigrationError, SidecarError, ImageError, ValueError) as exc:
            raise CliError(f"deer-reid: {exc}") from exc
        except Exception as exc:  # the database dropping, a concurrent writer, a refused value: one line
            from deer_reid_assets.core.errors import describe

            known = describe(exc) or ((str(exc), 1) if isinstance(exc, EmbeddingError) else None)
            if known is None:
                raise
            raise CliError(f"deer-reid: {known[0]}", known[1]) from exc

    return wrapper


@click.group()
@click.version_option(package_name="deer-reid")
def main() -> None:
    """Re-identify individual deer in trail-camera photos (Dagster + PostgreSQL/pgvector)."""


def engine():
    """The application database, refused while migrations are pending."""
    from deer_reid_assets.core.store import migrations

    eng = db.make_engine(db.database_url())
    pending = [name for name, state in migrations.status(eng) if state == "pending"]
    if pending:
        raise db.DatabaseError(f"the database has {len(pending)} pending migration(s) ({pending[0]}...): "
                               "run `deer-reid db migrate`")
    return eng


def instance(app_url: str, *, write_env_file: bool = True):
    """The Dagster instance on this project's PostgreSQL, with the GPU pool limit set."""
    import dagster as dg

    from deer_reid_assets.defs.instance import prepare_dagster_home, set_gpu_pool_limit

    prepare_dagster_home(app_url, write_env_file=write_env_file)
    inst = dg.DagsterInstance.get()
    set_gpu_pool_limit(inst)
    return inst


@dataclass
class RunOutcome:
    """What a materialization run left: each asset's metadata and each check's evaluation."""

    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)  # asset name -> AssetCheckEvaluation
    step_seconds: dict[str, float] = field(default_factory=dict)  # step key -> wall time of the step

    def echo_step_times(self) -> None:
        """Where the run's time went: each step's wall time, slowest first."""
        if not self.step_seconds:
            return
        click.echo(f"time per step ({len(self.step_seconds)} steps, {sum(self.step_seconds.values()):.0f} s in all):")
        for key, seconds in sorted(self.step_seconds.items(), key=lambda kv: (-kv[1], kv[0])):
            click.echo(f"  {key:<42} {seconds:8.1f} s")

    def echo_failed_audits(self) -> None:
        """One line per audit that failed (what depends on it was skipped in this run)."""
        for asset, evaluation in self.checks.items():
            if not evaluation.passed:
                click.echo(f"audit of {asset} FAILED: its version is not published and the steps after it were "
                           "skipped (deer-reid embeddings list)")


def materialize(assets: list, run_config: dict, resources: dict, inst, *, partition: str | None = None,
                job_name: str = "deer_reid_cli") -> RunOutcome:
    """Materialize ``assets`` (with their checks) in-process as the job ``job_name`` (the name the
    Dagster UI's run list shows, not ``__ephemeral_asset_job__``), camera_images as upload batch
    ``partition``. A failed run is a one-line CliError, except an audit that failed: that is an
    outcome (the version is not published), reported in ``checks``."""
    import dagster as dg

    from deer_reid_assets.definitions import ALL_CHECKS
    from deer_reid_assets.defs.ingest import upload_batches

    keys = {a.key for a in assets}
    checks = [c for c in ALL_CHECKS if all(k.asset_key in keys for k in c.check_keys)]
    if partition is not None:
        inst.add_dynamic_partitions(upload_batches.name, [partition])
    job = dg.define_asset_job(job_name, selection=dg.AssetSelection.assets(*assets))
    location = dg.Definitions(assets=assets, asset_checks=checks, jobs=[job], resources=resources)
    result = location.resolve_job_def(job_name).execute_in_process(
        run_config=run_config, instance=inst, partition_key=partition, raise_on_error=False)
    outcome = RunOutcome()
    for evaluation in result.get_asset_check_evaluations():
        outcome.checks[evaluation.asset_key.to_user_string()] = evaluation
    failed_audits = {f"{name}_audit" for name, e in outcome.checks.items() if not e.passed}
    failed = [e for e in result.all_events if e.is_step_failure and e.step_key not in failed_audits]
    if not result.success and (failed or not failed_audits):
        message = failed[0].event_specific_data.error.message.strip().splitlines()[-1] if failed else "run failed"
        raise CliError(f"deer-reid: the run failed in {failed[0].step_key if failed else '?'}: {message}")
    for stats in inst.get_run_step_stats(result.run_id):
        if stats.start_time is not None and stats.end_time is not None:
            outcome.step_seconds[stats.step_key] = stats.end_time - stats.start_time
    for event in result.all_events:
        if event.is_step_materialization:
            materialization = event.event_specific_data.materialization
            outcome.metadata[materialization.asset_key.to_user_string()] = materialization.metadata
    return outcome


def stepper():
    """``step(what)`` prints '[n] what  (+s)'."""
    count = [0]
    t0 = time.perf_counter()

    def step(what: str) -> None:
        count[0] += 1
        click.echo(f"[{count[0]}] {what}  (+{time.perf_counter() - t0:.0f} s)")

    return step
