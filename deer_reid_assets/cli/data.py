"""``deer-reid generate`` and ``deer-reid import-crops``: data in."""

from __future__ import annotations

from pathlib import Path

import click

from .common import engine, fail_cleanly, main


@main.command("generate")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", default=240, show_default=True, help="Photos to generate.")
@click.option("--bucks", default=12, show_default=True)
@click.option("--does", default=6, show_default=True)
@click.option("--seed", default=7, show_default=True)
@fail_cleanly
def generate(out_dir: Path, images: int, bucks: int, does: int, seed: int) -> None:
    """Generate synthetic trail-camera photos with ground truth into OUT_DIR."""
    from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset

    summary = generate_dataset(out_dir, SyntheticConfig(n_images=images, n_bucks=bucks, n_does=does, seed=seed))
    click.echo(f"{summary.n_images} photos, {summary.n_detections} detections of {summary.n_individuals} deer "
               f"({summary.n_labelled} labelled) in {summary.root}")


@main.command("import-crops")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--sex", default="unknown", type=click.Choice(["buck", "doe", "fawn", "unknown"]), show_default=True)
@click.option("--report", "then_report", is_flag=True,
              help="Then run `deer-reid report`: crops, embeddings, ensemble weights, matching and the evaluation.")
@click.option("--weights", default="auto", show_default=True, help="With --report: as `deer-reid report --weights`.")
@click.option("--image-size", default=224, show_default=True, help="With --report: crop side fed to the models.")
@fail_cleanly
def import_crops(directory: Path, sex: str, then_report: bool, weights: str, image_size: int) -> None:
    """Import labelled crops laid out DIRECTORY/<deer name>/<crop>.jpg (then evaluate: --report)."""
    from deer_reid_assets.core.ingest.importer import import_crop_folders

    report = import_crop_folders(engine(), directory, sex=sex)
    click.echo(f"{report.images_new} crops imported ({report.images_already_imported} already there, "
               f"{report.images_failed} unreadable), {report.deer_created} new deer")
    for path, reason in report.failures[:10]:
        click.echo(f"  rejected {path}: {reason}", err=True)
    if then_report:
        from .pipeline import run_report

        run_report(weights, image_size)
