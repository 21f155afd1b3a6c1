"""Adopting the existing system's live database: ``deer-reid db migrate --adopt [--dry-run]``.

The database is compared, level by level, with the shape of each migration file (``shapes.py``):

* a level that is there (by shape, whatever its file was called on the other side) is *recorded*
  as applied without running it;
* the existing system's later levels (012, 020, 021) and this project's own ones that are not
  there are *applied*, each in its own transaction, in number order, interleaved with the records
  so that the history never has a gap;
* a level that is partly there, or there with another definition, is refused with what differs, as
  is a database that lacks the existing system's baseline (001-011).

Nothing of the existing system is dropped, renamed or changed: this project's migrations only add
(tested: ``test_adopt.py`` checks that no level after 012 alters an object of an earlier one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from deer_reid_assets.core import coexistence
from deer_reid_assets.core.store import migrations as mig
from deer_reid_assets.core.store import shapes

COEXISTENCE_MIGRATION = "022_create_coexistence_tables"


@dataclass(frozen=True)
class Step:
    version: str
    name: str
    action: str  # "already recorded" | "record" | "apply"
    detail: str = ""

    def line(self) -> str:
        return f"{self.name}: {self.action}" + (f" ({self.detail})" if self.detail else "")


def inspect(engine: sa.Engine, migrations: list[mig.Migration]) -> dict[str, shapes.LevelCheck]:
    """version -> how the live database compares with that migration's shape."""
    with engine.connect() as conn:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
        live = shapes.catalog(conn, schema)
        level_shapes = shapes.probe_shapes(conn, migrations)
        conn.rollback()
    return {m.version: shapes.compare(live, level_shapes[m.version], m.version, m.name) for m in migrations}


def plan(engine: sa.Engine, directory: Path | None = None) -> list[Step]:
    """What ``--adopt`` would do, without changing anything; raises MigrationError on a shape it
    does not recognise."""
    migrations = mig.discover(directory)
    with engine.connect() as conn:
        recorded = mig.applied(conn)
    mig.verify(recorded, migrations)
    checks = inspect(engine, migrations)
    steps: list[Step] = []
    refused: list[str] = []
    for m in migrations:
        check = checks[m.version]
        if m.version in recorded:
            steps.append(Step(m.version, m.name, "already recorded"))
        elif check.state == "present":
            note = "; ".join(check.notes[:3])
            found = "found by shape" if check.n_objects else "nothing to check"
            steps.append(Step(m.version, m.name, "record", found + (f": {note}" if note else "")))
        elif check.state == "absent" and m.version not in mig.BASELINE_LEVELS:
            steps.append(Step(m.version, m.name, "apply"))
        elif check.state == "absent":
            refused.append(f"{m.name} is not there ({check.explain()})")
        else:
            refused.append(f"{m.name} differs: {check.explain()}")
    if refused:
        more = f" | ... and {len(refused) - 4} more level(s)" if len(refused) > 4 else ""
        raise mig.MigrationError(
            "cannot adopt this database: its schema is not one this project recognises: " + " | ".join(refused[:4]) + more
            + " (on an empty database run `deer-reid db migrate` without --adopt)"
        )
    return steps


def adopt(engine: sa.Engine, *, dry_run: bool = False, directory: Path | None = None) -> list[Step]:
    """Record the levels the database has, apply the ones it lacks (each step in its own
    transaction). Returns the plan; with ``dry_run`` nothing is changed."""
    migrations = {m.version: m for m in mig.discover(directory)}
    if not dry_run:
        mig.prepare(engine, list(migrations.values()))
    steps = plan(engine, directory)
    if dry_run:
        return steps
    for step in steps:
        m = migrations[step.version]
        if step.action == "record":
            mig.record(engine, m)
        elif step.action == "apply":
            mig.apply_one(engine, m)
            if m.name == COEXISTENCE_MIGRATION:  # the existing system keeps live matching until cut-over
                with engine.begin() as conn:
                    coexistence.hand_to_existing_system(conn)
    return steps


def record_baseline(engine: sa.Engine, migrations: list[mig.Migration], upto: str) -> None:
    """``--baseline UPTO``: record the existing system's levels 001..UPTO, after checking by shape
    that every one of them is there; refuses (recording nothing) when one is not."""
    mig.prepare(engine, migrations)
    wanted = [m for m in migrations if m.version <= upto]
    checks = inspect(engine, migrations)
    with engine.connect() as conn:
        recorded = mig.applied(conn)
    bad = [f"{m.name}: {checks[m.version].explain()}" for m in wanted
           if m.version not in recorded and checks[m.version].state != "present"]
    later = [m.name for m in migrations if m.version > upto and m.version not in recorded
             and checks[m.version].exact > 0]
    if later and not bad:
        raise mig.MigrationError(
            f"the database already has (part of) {', '.join(later)}, after the baseline {upto}: "
            "use `deer-reid db migrate --adopt`, which recognises every level by shape"
        )
    if bad:
        raise mig.MigrationError(
            f"cannot record the baseline up to {upto}: the database lacks what those migrations create ("
            + " | ".join(bad) + ")"
        )
    for m in wanted:
        if m.version not in recorded:
            mig.record(engine, m)
