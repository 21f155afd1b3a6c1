"""``deer-reid antlers import | export | config``: antler keypoint annotations in and out."""

from __future__ import annotations

from pathlib import Path

import click

from .common import engine, fail_cleanly, main

FORMATS = click.Choice(["yolo", "label-studio"])


@main.group("antlers")
def antlers() -> None:
    """Antler keypoint annotations (YOLOv8-pose datasets, Label Studio exports)."""


@antlers.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=FORMATS, required=True,
              help="yolo: a data.yaml (or its folder); label-studio: a JSON export (or a folder of them).")
@fail_cleanly
def import_(path: Path, fmt: str) -> None:
    """Import annotations into antler_keypoints (matched to stored photos and detections)."""
    from deer_reid_assets.core.antlers.transfer import import_annotations

    report = import_annotations(engine(), path, fmt)
    click.echo(f"{report.photos_matched} photos matched, keypoints of {report.detections_written} buck detections "
               f"written ({report.keypoints_written} points), {report.boxes_without_keypoints} doe/fawn boxes, "
               f"{len(report.errors)} not imported")
    for line in report.errors:
        click.echo(f"  not imported: {line}", err=True)


@antlers.command("export")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=FORMATS, required=True)
@fail_cleanly
def export(out_dir: Path, fmt: str) -> None:
    """Export the stored annotations as a YOLOv8-pose dataset or Label Studio tasks + config."""
    from deer_reid_assets.core.antlers.transfer import export_annotations

    written, n = export_annotations(engine(), out_dir, fmt)
    click.echo(f"{n} photos exported: {written}")


@antlers.command("config")
def config() -> None:
    """Print the Label Studio labeling config for the 16 antler points."""
    from deer_reid_assets.core.antlers.labelstudio import labeling_config

    click.echo(labeling_config(), nl=False)
