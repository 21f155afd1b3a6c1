"""``deer-reid demo / report / train / serve``: the asset graph, materialized in-process or served."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from deer_reid_assets.core.store import db

from .common import LOG_INFO, CliError, engine, fail_cleanly, instance, main, materialize, stepper
from .summary import RunSummary

# The demo's hunter has reviewed 90% of the sightings of the deer with a profile (the rest, and every
# sighting of an unprofiled deer, is left to matching). Half of the labels become the evaluation's
# queries, so training sees the other half: at 50% reviewed that is ~4 crops per deer, too few to learn
# from at random init (measured: test rank-1 0.34 at 50%, 0.44 at 80%, 0.59 at 90%, 80 px, 2-core CPU).
DEMO_LABELLED_FRACTION = 0.9
# The pretrained families see 224 px crops (their ImageNet size); the demo on a CPU uses 128 px, which costs a
# third of the forward time (the demo's own CPU profile, as training has one).
DEMO_GPU_IMAGE_SIZE, DEMO_CPU_IMAGE_SIZE = 224, 128
# On a CPU the demo trains for 20 of the CPU profile's 40 epochs, validating every 4th (the profile: every 2nd), to
# come near 3 minutes on 2 cores; the profile's 40 (`deer-reid demo --epochs 40`, or the `train` command) give a
# better model (fresh-clone demo, test queries: rank-1 0.507 / mAP 0.417 at 40 epochs, 0.393 / 0.312 at 20, 0.371 /
# 0.291 at 16). On a GPU it keeps its profile.
DEMO_CPU_EPOCHS, DEMO_CPU_VAL_EVERY = 20, 4
REPORTS_HINT = ("Open the UI with `deer-reid serve` (http://127.0.0.1:3000 -> Assets -> reid_evaluation shows the "
                "table and the plot)")


def _resources(*, weights: str = "auto", image_size: int = 224, upload_dir: Path | None = None) -> dict:
    from deer_reid_assets.definitions import default_resources
    from deer_reid_assets.defs.resources import ImageStoreResource, ModelWeightsResource

    resources = default_resources()
    if upload_dir is not None:
        resources["image_store"] = ImageStoreResource(upload_dir=str(upload_dir))
    resources["model_weights"] = ModelWeightsResource(weights=weights, image_size=image_size)
    return resources


@main.command("demo")
@click.option("--images", default=600, show_default=True, help="Synthetic photos to generate.")
@click.option("--bucks", default=24, show_default=True, help="Synthetic individuals: bucks.")
@click.option("--does", default=12, show_default=True, help="Synthetic individuals: does.")
@click.option("--weights", default="auto", show_default=True,
              help="'auto' (ImageNet when cached, else seeded random), 'imagenet', 'random' or a checkpoint path.")
@click.option("--image-size", type=int, default=None,
              help="Crop side fed to the pretrained families, in pixels [default: 224 on a GPU; 128 on a CPU, the "
              "demo's CPU profile, 3x cheaper]. `deer-reid embed` and the assets keep 224 unless told.")
@click.option("--regenerate", is_flag=True, help="Regenerate the synthetic photos even when present.")
@click.option("--train/--no-train", default=True, show_default=True,
              help="Train the deer-specific model too (the CPU profile on a CPU, for --epochs).")
@click.option("--epochs", type=int, default=None,
              help=f"Training epochs [default: the profile's on a GPU; {DEMO_CPU_EPOCHS} on a CPU, of the CPU "
              "profile's 40, to keep the demo near 3 minutes].")
@click.option("--val-every", type=int, default=None,
              help=f"Validate every this many epochs [default: the profile's on a GPU; {DEMO_CPU_VAL_EVERY} on a CPU; "
              "the CPU profile's is 2].")
@fail_cleanly
def demo(images: int, bucks: int, does: int, weights: str, image_size: int | None, regenerate: bool,
         train: bool, epochs: int | None, val_every: int | None) -> None:
    """Embedded PostgreSQL + migrations + synthetic photos + the whole asset graph, then the metrics."""
    from deer_reid_assets.core.embed.device import resolve_device
    from deer_reid_assets.core.store import migrations
    from deer_reid_assets.definitions import graph
    from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset

    started = time.perf_counter()
    cuda = resolve_device("auto").startswith("cuda")
    if not cuda:
        epochs = DEMO_CPU_EPOCHS if epochs is None else epochs
        val_every = DEMO_CPU_VAL_EVERY if val_every is None else val_every
    for name, value in (("--epochs", epochs), ("--val-every", val_every)):
        if value is not None and value < 1:
            raise CliError(f"deer-reid demo: {name} must be at least 1, got {value}")
    overrides = {k: v for k, v in (("epochs", epochs), ("val_every", val_every)) if v is not None}
    if image_size is None:
        image_size = DEMO_GPU_IMAGE_SIZE if cuda else DEMO_CPU_IMAGE_SIZE
        click.echo(f"crops at {image_size} px for the pretrained families ({'GPU' if cuda else 'CPU profile; 224 on a GPU'}"
                   "; --image-size to choose)")
    step = stepper()
    step("database")
    url = db.database_url()
    applied = migrations.migrate(db.make_engine(url))
    click.echo(f"      {db.redact(url)} ({len(applied)} migration(s) applied)")
    data = db.reid_home() / "demo_data"
    if regenerate or not (data / "detections.json").exists():
        step("synthetic trail-camera photos")
        summary = generate_dataset(data, SyntheticConfig(n_images=images, n_bucks=bucks, n_does=does,
                                                         labelled_fraction=DEMO_LABELLED_FRACTION))
        click.echo(f"      {summary.n_images} photos, {summary.n_detections} detections of "
                   f"{summary.n_individuals} deer")
    inst = instance(url)
    step("materializing the asset graph (camera_images -> ... -> finetuned_reid_model -> ... -> embedding_report)"
         if train else "materializing the asset graph without training (camera_images -> ... -> embedding_report)")
    run_config = LOG_INFO
    if train and overrides:
        click.echo("      training " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in overrides.items()))
        run_config = {**LOG_INFO, "ops": {"finetuned_reid_model": {"config": overrides}}}
    outcome = materialize(graph(train=train), run_config, _resources(weights=weights, image_size=image_size,
                                                                   upload_dir=data), inst, partition="demo",
                          job_name="reid_pipeline" if train else "reid_pipeline_without_training")
    outcome.echo_failed_audits()
    summary = RunSummary.from_metadata(outcome.metadata)
    click.echo(f"      weights used: {summary.weights}")
    step("metrics")
    summary.echo_metrics()
    click.echo("")
    outcome.echo_step_times()
    click.echo(f"\ndone in {time.perf_counter() - started:.0f} s. {REPORTS_HINT}; "
               f"report files in {db.reid_home() / 'store' / 'reports'}")


def run_report(weights: str, image_size: int) -> None:
    """From the crops in the database to the before/after report: crops, embeddings + audits, publish,
    ensemble weights, profiles, matching, reid_evaluation and embedding_report, as one Dagster run."""
    from deer_reid_assets.definitions import FROM_CROPS

    engine()
    url = db.database_url()
    click.echo("materializing crops -> embeddings -> ensemble_weights -> deer_assignments -> reid_evaluation, "
               "embedding_report")
    outcome = materialize(FROM_CROPS, LOG_INFO, _resources(weights=weights, image_size=image_size),
                          instance(url, write_env_file=False), job_name="report_from_crops")
    outcome.echo_failed_audits()
    summary = RunSummary.from_metadata(outcome.metadata)
    click.echo(f"weights used: {summary.weights}")
    if summary.publish_table is not None:
        click.echo(summary.publish_table)
    summary.echo_metrics()
    click.echo("")
    outcome.echo_step_times()
    click.echo(f"\nreport files in {db.reid_home() / 'store' / 'reports'}")


@main.command("report")
@click.option("--weights", default="auto", show_default=True,
              help="'auto' (ImageNet when cached, else seeded random), 'imagenet', 'random' or a checkpoint path.")
@click.option("--image-size", default=224, show_default=True, help="Crop side fed to the models, in pixels.")
@fail_cleanly
def report(weights: str, image_size: int) -> None:
    """The before/after report from the detections already in the database (e.g. after
    `deer-reid import-crops DIR`): crops, embeddings, ensemble weights, matching, evaluation."""
    run_report(weights, image_size)


@main.command("train")
@click.option("--profile", default="auto", show_default=True, type=click.Choice(["auto", "full", "cpu"]),
              help="'full' (GPU: ResNet50, 60 epochs at 224 px), 'cpu' (ResNet18 at 80 px, ~3 min), 'auto' by device.")
@click.option("--epochs", type=int, help="Override the profile's number of epochs.")
@click.option("--image-size", type=int, help="Override the profile's crop size.")
@click.option("--arch", type=click.Choice(["resnet18", "resnet34", "resnet50"]), help="Override the profile's backbone.")
@click.option("--weights", default="auto", show_default=True,
              help="Start: 'auto', 'imagenet', 'random', a torchvision state-dict file or an earlier checkpoint.")
@click.option("--crops", "crops_dir", type=click.Path(path_type=Path),
              help="Real-data check instead: train on DIR/<animal>/<photo>.jpg, hold out whole animals, print untrained "
                   "vs trained rank-1/mAP and the assignment rate at FMR <= 5% (no database).")
@click.option("--max-per-animal", type=int, help="With --crops: at most this many photos per animal.")
@click.option("--device", default="auto", show_default=True, help="With --crops: 'auto', 'cpu' or 'cuda'.")
@click.option("--workers", default=0, show_default=True, help="Data-loading worker processes.")
@fail_cleanly
def train(profile: str, epochs: int | None, image_size: int | None, arch: str | None, weights: str,
          crops_dir: Path | None, max_per_animal: int | None, device: str, workers: int) -> None:
    """Build the triplet dataset, train the deer-specific model (prints the collapse guard's line), embed
    with it, audit (A/B against the published configuration) and publish only if better. With --crops
    DIR: the real-data check on a folder of labelled crops."""
    overrides = {k: v for k, v in {"epochs": epochs, "image_size": image_size, "arch": arch,
                                   "num_workers": workers or None}.items() if v is not None}
    if crops_dir is not None:
        from deer_reid_assets.core.reid import crops_check

        click.echo(crops_check.run_cli(crops_dir, profile, overrides, weights, device, max_per_animal, click.echo).report())
        return
    from deer_reid_assets.definitions import AFTER_TRAINING, TRAINING_ASSETS
    from deer_reid_assets.defs.resources import ModelWeightsResource

    engine()
    resources = _resources()
    resources["model_weights"] = ModelWeightsResource(weights=weights)
    inst = instance(db.database_url(), write_env_file=False)
    run_config = {**LOG_INFO, "ops": {"finetuned_reid_model": {"config": {"profile": profile, **overrides}}}}
    *learn, embed = TRAINING_ASSETS
    model = RunSummary.from_metadata(materialize(learn, run_config, resources, inst, job_name="train_reid_model").metadata).model
    click.echo(f"model {model['model_version']} ({model['status']}): best val rank-1 {model['best_val_rank1']:.3f}, "
               f"mAP {model['best_val_mAP']:.3f} at epoch {model['best_epoch']} on {model['device']}\n{model['guard']}")
    if model["status"] == "collapsed":
        raise CliError("deer-reid: the model collapsed and is not used; nothing was embedded or published")
    summary = RunSummary.from_metadata(materialize([embed, *AFTER_TRAINING], LOG_INFO, resources, inst,
                                                           job_name="publish_finetuned_model").metadata)
    click.echo(summary.publish_table)
    click.echo(summary.comparison_table)


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True)
@click.option("--review-port", default=3001, show_default=True, help="Port of the review app (0: do not start it).")
@click.option("--workspace", "workspace_file", type=click.Path(dir_okay=False), default=None,
              help="Workspace file of the code location (default: workspace.yaml, steps in this machine's processes; "
              "deploy/celery/workspace.yaml: steps on Celery workers).")
@fail_cleanly
def serve(host: str, port: int, review_port: int, workspace_file: str | None) -> None:
    """The Dagster UI (dagster-webserver) and daemon, and the review app, against this project's PostgreSQL."""
    from deer_reid_assets.core.review.security import required_token
    from deer_reid_assets.defs.instance import REPO_ROOT

    workspace = str(Path(workspace_file).resolve() if workspace_file else REPO_ROOT / "workspace.yaml")
    if not Path(workspace).is_file():
        raise CliError(f"deer-reid: --workspace {workspace_file}: no such file")
    if review_port:
        required_token(host, os.environ.get("DEER_REID_REVIEW_TOKEN"))  # refuse before starting anything
    from deer_reid_assets.core.store import migrations

    url = db.database_url()
    migrations.migrate(db.make_engine(url))
    instance(url).dispose()
    bin_dir = Path(sys.executable).parent
    procs = [
        subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", "-w", workspace], cwd=REPO_ROOT),
        subprocess.Popen([str(bin_dir / "dagster-webserver"), "-h", host, "-p", str(port), "-w", workspace],
                         cwd=REPO_ROOT),
    ]
    if review_port:
        procs.append(subprocess.Popen([sys.executable, "-m", "deer_reid_assets.cli", "review", "--host", host,
                                       "--port", str(review_port), "--dagster-url", f"http://{host}:{port}"]))
    click.echo(f"Dagster UI on http://{host}:{port} (DAGSTER_HOME={os.environ['DAGSTER_HOME']}); Ctrl-C stops it")
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
