"""``deer-reid marks import``: the marks people recorded for deer (a ``deer-reid-marks/1`` file)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import engine, fail_cleanly, main


@main.group("marks")
def marks() -> None:
    """A deer's marks (throat patch, flank marks, ear notches, body size class) recorded by people."""


@marks.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@fail_cleanly
def import_(path: Path) -> None:
    """Record the marks of a deer-reid-marks/1 file (or a folder of them): deer by name, one record each,
    as the review app's deer page does; saving the marks a deer already has records nothing."""
    from deer_reid_assets.core.marks.records import import_file

    report = import_file(engine(), path)
    click.echo(f"{report.recorded} deer recorded, {report.unchanged} unchanged, {len(report.errors)} not used "
               "(body sizes are measured by the physical_features asset)")
    for line in report.errors:
        click.echo(f"  not used: {line}", err=True)
