"""``deer-reid``: a thin command line over the core and Dagster's ``materialize``.

Every command prints one clear line and exits non-zero on bad input or an unreachable database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from deer_reid_assets.core import families
from deer_reid_assets.core.store import db


class CliError(click.ClickException):
    """Printed as exactly its message (no 'Error:' prefix), exit status 1."""

    def show(self, file=None) -> None:
        click.echo(self.message, err=True, file=file)


def _fail_cleanly(fn):
    """Turn the core's known errors into one-line CLI errors."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from deer_reid_assets.core.embed.versions import EmbeddingError
        from deer_reid_assets.core.ingest.imaging import ImageError
        from deer_reid_assets.core.ingest.importer import SidecarError
        from deer_reid_assets.core.store.migrations import MigrationError

        try:
            return fn(*args, **kwargs)
        except (db.DatabaseError, MigrationError, SidecarError, ImageError, EmbeddingError, ValueError) as exc:
            raise CliError(f"deer-reid: {exc}") from exc

    return wrapper


def _engine():
    from deer_reid_assets.core.store import migrations

    engine = db.make_engine(db.database_url())
    pending = [name for name, state in migrations.status(engine) if state == "pending"]
    if pending:
        raise db.DatabaseError(f"the database has {len(pending)} pending migration(s) ({pending[0]}...): run `deer-reid db migrate`")
    return engine


@click.group()
@click.version_option(package_name="deer-reid")
def main() -> None:
    """Re-identify individual deer in trail-camera photos (Dagster + PostgreSQL/pgvector)."""


# --- db ------------------------------------------------------------------------------------------
@main.group("db")
def db_group() -> None:
    """The database: the embedded PostgreSQL (default) or $DATABASE_URL."""


@db_group.command("start")
@_fail_cleanly
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
@_fail_cleanly
def db_stop() -> None:
    """Stop the embedded PostgreSQL."""
    server = db.embedded()
    click.echo("stopped" if server.stop() else f"not running ({server.pgdata})")


@db_group.command("status")
@_fail_cleanly
def db_status() -> None:
    """Where the database is, whether it answers, and the migrations applied."""
    from deer_reid_assets.core.store import migrations

    if not os.environ.get("DATABASE_URL") and not db.embedded().is_running():
        raise CliError(f"deer-reid: the embedded PostgreSQL in {db.embedded().pgdata} is not running (deer-reid db start)")
    url = db.database_url(start_embedded=False)
    engine = db.make_engine(url)
    states = migrations.status(engine)
    applied = sum(1 for _, s in states if s != "pending")
    click.echo(f"database {db.redact(url)}: reachable; migrations {applied}/{len(states)} applied")
    for name, state in states:
        click.echo(f"  {state:8s} {name}")


@db_group.command("url")
@click.option("--dagster", is_flag=True, help="Print the URL of Dagster's instance storage instead.")
@_fail_cleanly
def db_url(dagster: bool) -> None:
    """Print the SQLAlchemy URL of the application database."""
    url = db.database_url(start_embedded=False)
    click.echo(db.dagster_storage_url(url) if dagster else url)


@db_group.command("migrate")
@click.option("--baseline", metavar="VERSION", help="Adopt an existing database: record 001..VERSION as applied "
              "(after checking their tables exist), then run the rest.")
@_fail_cleanly
def db_migrate(baseline: str | None) -> None:
    """Apply pending migrations (starts the embedded PostgreSQL when needed)."""
    from deer_reid_assets.core.store import migrations

    engine = db.make_engine(db.database_url())
    done = migrations.migrate(engine, baseline=baseline)
    click.echo(f"applied {len(done)} migration(s)" + (": " + ", ".join(done) if done else "; database is up to date"))


# --- data ----------------------------------------------------------------------------------------
@main.command("generate")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", default=240, show_default=True, help="Photos to generate.")
@click.option("--bucks", default=12, show_default=True)
@click.option("--does", default=6, show_default=True)
@click.option("--seed", default=7, show_default=True)
@_fail_cleanly
def generate(out_dir: Path, images: int, bucks: int, does: int, seed: int) -> None:
    """Generate synthetic trail-camera photos with ground truth into OUT_DIR."""
    from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset

    summary = generate_dataset(out_dir, SyntheticConfig(n_images=images, n_bucks=bucks, n_does=does, seed=seed))
    click.echo(f"{summary.n_images} photos, {summary.n_detections} detections of {summary.n_individuals} deer "
               f"({summary.n_labelled} labelled) in {summary.root}")


@main.command("import-crops")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--sex", default="unknown", type=click.Choice(["buck", "doe", "fawn", "unknown"]), show_default=True)
@_fail_cleanly
def import_crops(directory: Path, sex: str) -> None:
    """Import labelled crops laid out DIRECTORY/<deer name>/<crop>.jpg (then evaluate)."""
    from deer_reid_assets.core.ingest.importer import import_crop_folders

    report = import_crop_folders(_engine(), directory, sex=sex)
    click.echo(f"{report.images_new} crops imported ({report.images_already_imported} already there, "
               f"{report.images_failed} unreadable), {report.deer_created} new deer")
    for path, reason in report.failures[:10]:
        click.echo(f"  rejected {path}: {reason}", err=True)


# --- Dagster -------------------------------------------------------------------------------------
def _instance(app_url: str, *, write_env_file: bool = True):
    import dagster as dg

    from deer_reid_assets.defs.instance import prepare_dagster_home, set_gpu_pool_limit

    prepare_dagster_home(app_url, write_env_file=write_env_file)
    instance = dg.DagsterInstance.get()
    set_gpu_pool_limit(instance)
    return instance


LOG_INFO = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
TRAINING_ASSETS = {"triplet_dataset", "finetuned_reid_model", "finetuned_embeddings"}


def materialize_all(run_config: dict, resources: dict, instance, partition: str | None, *,
                    train: bool = False, only: set[str] | None = None) -> dict:
    """Materialize the asset graph in-process (without the training assets unless ``train``; or
    just ``only``), camera_images as upload batch ``partition``; returns each asset's metadata."""
    import dagster as dg

    from deer_reid_assets.definitions import ALL_ASSETS, ALL_CHECKS
    from deer_reid_assets.defs.ingest import upload_batches

    def wanted(key) -> bool:
        name = key.to_user_string()
        return name in only if only is not None else (train or name not in TRAINING_ASSETS)

    assets = [a for a in ALL_ASSETS if wanted(a.key)]
    checks = [c for c in ALL_CHECKS if all(wanted(k.asset_key) for k in c.check_keys)]
    if partition is not None:
        instance.add_dynamic_partitions(upload_batches.name, [partition])
    result = dg.materialize([*assets, *checks], run_config=run_config, resources=resources,
                            instance=instance, partition_key=partition, raise_on_error=False)
    if not result.success:
        failed = [e for e in result.all_events if e.is_step_failure]
        message = failed[0].event_specific_data.error.message.strip().splitlines()[-1] if failed else "run failed"
        raise CliError(f"deer-reid: the run failed in {failed[0].step_key if failed else '?'}: {message}")
    metadata = {}
    for event in result.all_events:
        if event.is_step_materialization:
            materialization = event.event_specific_data.materialization
            metadata[materialization.asset_key.to_user_string()] = materialization.metadata
    return metadata


@main.command("demo")
@click.option("--images", default=600, show_default=True, help="Synthetic photos to generate.")
@click.option("--bucks", default=24, show_default=True, help="Synthetic individuals: bucks.")
@click.option("--does", default=12, show_default=True, help="Synthetic individuals: does.")
@click.option("--weights", default="auto", show_default=True,
              help="'auto' (ImageNet when cached, else seeded random), 'imagenet', 'random' or a checkpoint path.")
@click.option("--image-size", default=224, show_default=True, help="Crop side fed to the models, in pixels.")
@click.option("--regenerate", is_flag=True, help="Regenerate the synthetic photos even when present.")
@click.option("--train/--no-train", default=True, show_default=True,
              help="Train the deer-specific model too (the CPU profile on a CPU: about 2 minutes here).")
@_fail_cleanly
def demo(images: int, bucks: int, does: int, weights: str, image_size: int, regenerate: bool, train: bool) -> None:
    """Embedded PostgreSQL + migrations + synthetic photos + the whole asset graph, then the metrics."""
    from deer_reid_assets.core.store import migrations
    from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset
    from deer_reid_assets.definitions import default_resources
    from deer_reid_assets.defs.resources import ImageStoreResource, ModelWeightsResource

    started = time.perf_counter()
    step = _stepper()
    step("database")
    url = db.database_url()
    engine = db.make_engine(url)
    applied = migrations.migrate(engine)
    click.echo(f"      {db.redact(url)} ({len(applied)} migration(s) applied)")
    data = db.reid_home() / "demo_data"
    if regenerate or not (data / "detections.json").exists():
        step("synthetic trail-camera photos")
        summary = generate_dataset(data, SyntheticConfig(n_images=images, n_bucks=bucks, n_does=does))
        click.echo(f"      {summary.n_images} photos, {summary.n_detections} detections of {summary.n_individuals} deer")
    instance = _instance(url)
    resources = default_resources()
    resources["image_store"] = ImageStoreResource(upload_dir=str(data))
    resources["model_weights"] = ModelWeightsResource(weights=weights, image_size=image_size)
    step("materializing the asset graph (camera_images -> ... -> finetuned_reid_model -> ... -> embedding_report)"
         if train else "materializing the asset graph without training (camera_images -> ... -> embedding_report)")
    metadata = materialize_all(LOG_INFO, resources, instance, partition="demo", train=train)
    emb = metadata["baseline_embeddings"]
    click.echo(f"      weights used: {emb['weights'].value}")
    step("metrics")
    _print_metrics(metadata)
    click.echo(f"\ndone in {time.perf_counter() - started:.0f} s. Open the UI with `deer-reid serve` "
               "(http://127.0.0.1:3000 -> Assets -> reid_evaluation shows the table and the plot); "
               f"report files in {db.reid_home() / 'store' / 'reports'}")


def _stepper():
    count = [0]
    t0 = time.perf_counter()

    def step(what: str) -> None:
        count[0] += 1
        click.echo(f"[{count[0]}] {what}  (+{time.perf_counter() - t0:.0f} s)")

    return step


def _print_metrics(metadata: dict) -> None:
    evaluation = metadata["reid_evaluation"]
    assignments = metadata["deer_assignments"]
    click.echo(f"      live matching ({assignments['method'].value}): assigned {assignments['assigned'].value}/"
               f"{assignments['detections_considered'].value} unreviewed detections at threshold "
               f"{assignments['threshold'].value:.2f}")
    fmr = evaluation["live_false_match_rate"].value
    click.echo(f"      live assignment rate {evaluation['live_assignment_rate'].value:.3f}, live false-match rate "
               + (f"{fmr:.3f}" if isinstance(fmr, float) else str(fmr)))
    click.echo("\nBaseline, held-out protocol (reid_evaluation):")
    click.echo(evaluation["summary"].value)
    if "embedding_report" in metadata:
        click.echo("\nBefore/after on the same test queries (embedding_report):")
        click.echo(metadata["embedding_report"]["comparison"].value)


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True)
@_fail_cleanly
def serve(host: str, port: int) -> None:
    """The Dagster UI (dagster-webserver) and daemon against this project's PostgreSQL."""
    from deer_reid_assets.core.store import migrations
    from deer_reid_assets.defs.instance import REPO_ROOT

    url = db.database_url()
    migrations.migrate(db.make_engine(url))
    instance = _instance(url)
    instance.dispose()
    workspace = str(REPO_ROOT / "workspace.yaml")
    bin_dir = Path(sys.executable).parent
    procs = [
        subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", "-w", workspace], cwd=REPO_ROOT),
        subprocess.Popen([str(bin_dir / "dagster-webserver"), "-h", host, "-p", str(port), "-w", workspace], cwd=REPO_ROOT),
    ]
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


@main.command("embed")
@click.option("--model", "family", default="all", show_default=True,
              type=click.Choice([*families.PRETRAINED, "all"]))
@click.option("--weights", default="auto", show_default=True, help="'auto', 'imagenet', 'random' or a checkpoint path.")
@click.option("--image-size", default=224, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--refit", is_flag=True, help="Fit a new projection (a new version) instead of reusing the current one.")
@click.option("--chunk", default=128, show_default=True, help="Crops per committed chunk (resume granularity).")
@click.option("--projection-sample", default=1500, show_default=True, help="Crops sampled to fit a new projection.")
@click.option("--no-publish", is_flag=True, help="Leave the completed version staged (audit it first).")
@_fail_cleanly
def embed(family: str, weights: str, image_size: int, batch_size: int, device: str, refit: bool, chunk: int,
          projection_sample: int, no_publish: bool) -> None:
    """(Re-)embed every usable crop, in committed chunks: an interrupted run resumes where it stopped;
    a complete version is audited and published only when the audit passes."""
    from deer_reid_assets.core import audit
    from deer_reid_assets.core.embed import versions as embeddings

    engine = _engine()
    artifacts = db.reid_home() / "store" / "artifacts"
    settings = families.EmbedderSettings(weights=weights, image_size=image_size, device=device, batch_size=batch_size)
    for name in (families.PRETRAINED if family == "all" else [family]):
        embedder = families.get(name).embedder(engine, settings)
        click.echo(f"{name}: {embedder.weights.description}")
        with click.progressbar(length=1, label=f"  embedding ({name})", show_pos=True) as bar:
            def progress(done: int, total: int) -> None:
                bar.length = total
                bar.update(done - bar.pos)

            report = embeddings.embed_crops(engine, embedder, artifacts=artifacts, refit=refit, chunk=chunk,
                                            sample_size=projection_sample, progress=progress)
        state = "resumed, " if report.resumed else ""
        click.echo(f"  {report.version}: {report.new_vectors} new vectors ({state}{report.total_vectors} in all, "
                   f"{report.per_detection_ms:.1f} ms per new detection)")
        result = audit.audit_version(engine, report.version)
        embeddings.record_audit(engine, report.version, result.passed, result.to_json())
        failed = [c["check"] + ": " + c["detail"] for c in result.checks if not c["passed"]]
        click.echo(f"  audit against {result.against or 'nothing published'}: "
                   + ("passed" if result.passed else "FAILED (" + "; ".join(failed) + ")")
                   + f"; {result.changed} assignment(s) would change")
        if result.promotable and not no_publish:
            previous = embeddings.publish(engine, report.version)[name]
            click.echo(f"  published {report.version}" + (f" (was {previous})" if previous and previous != report.version else ""))


@main.command("train")
@click.option("--profile", default="auto", show_default=True, type=click.Choice(["auto", "full", "cpu"]),
              help="'full' (GPU: 60 epochs at 224 px), 'cpu' (small and quick), 'auto' picks by device.")
@click.option("--epochs", type=int, help="Override the profile's number of epochs.")
@click.option("--image-size", type=int, help="Override the profile's crop size.")
@click.option("--weights", default="auto", show_default=True, help="Backbone start: 'auto', 'imagenet', 'random' or a path.")
@_fail_cleanly
def train(profile: str, epochs: int | None, image_size: int | None, weights: str) -> None:
    """Build the triplet dataset, train the deer-specific model, embed with it, audit (A/B against
    the published configuration) and publish only if better; prints the A/B table."""
    from deer_reid_assets.definitions import default_resources
    from deer_reid_assets.defs.resources import ModelWeightsResource

    url = db.database_url()
    _engine()
    instance = _instance(url, write_env_file=False)
    resources = default_resources()
    resources["model_weights"] = ModelWeightsResource(weights=weights)
    overrides = {k: v for k, v in {"profile": profile, "epochs": epochs, "image_size": image_size}.items() if v is not None}
    run_config = {**LOG_INFO, "ops": {"finetuned_reid_model": {"config": overrides}}}
    metadata = materialize_all(run_config, resources, instance, None, only={
        "triplet_dataset", "finetuned_reid_model", "finetuned_embeddings", "published_embeddings", "deer_profiles",
        "deer_assignments", "embedding_report"})
    model = metadata["finetuned_reid_model"]
    click.echo(f"model {model['model_version'].value}: best val mAP {model['best_val_mAP'].value:.3f} at epoch "
               f"{model['best_epoch'].value} on {model['device'].value}")
    click.echo(metadata["published_embeddings"]["publish"].value)
    click.echo(metadata["embedding_report"]["comparison"].value)


@main.group("embeddings")
def embeddings_group() -> None:
    """Embedding versions: list them, roll back to an earlier one."""


@embeddings_group.command("list")
@_fail_cleanly
def embeddings_list() -> None:
    """Every embedding version with its status, audit and coverage."""
    from deer_reid_assets.core.embed import versions as embeddings

    engine = _engine()
    with engine.connect() as conn:
        rows = embeddings.list_versions(conn)
    if not rows:
        click.echo("no embedding versions yet")
    click.echo(f"{'version':20s} {'family':13s} {'status':10s} {'audit':7s} {'vectors':>7s}  created              weights")
    for r in rows:
        audit = {True: "passed", False: "FAILED", None: "-"}[r["audit_passed"]]
        click.echo(f"{r['version']:20s} {r['model_family']:13s} {r['status']:10s} {audit:7s} {r['n_embeddings']:7d}  "
                   f"{r['created_at']:%Y-%m-%d %H:%M:%S}  {r['weights_description'][:60]}")


@embeddings_group.command("rollback")
@click.argument("version")
@click.option("--threshold", default=0.40, show_default=True, help="Operating threshold when no tuned one applies.")
@_fail_cleanly
def embeddings_rollback(version: str, threshold: float) -> None:
    """Publish VERSION again (it must be complete and have passed its audit), rebuild the profiles and
    re-match, all recorded in the Dagster instance as materializations of the assets it changed."""
    import dagster as dg

    from deer_reid_assets.core.embed import versions as embeddings
    from deer_reid_assets.core import matching

    engine = _engine()
    replaced = embeddings.publish(engine, version)
    versions, _, set_id = matching.rebuild_profiles(engine)
    models, used_threshold, method = matching.matcher_setup(engine, "auto", threshold)
    report = matching.assign_detections(engine, models, threshold=used_threshold, method=method)
    instance = _instance(db.database_url(start_embedded=False), write_env_file=False)
    for key, metadata in (
        ("published_embeddings", {"published": dg.MetadataValue.json(versions), "rolled_back_to": version}),
        ("deer_profiles", {"embedding_versions": dg.MetadataValue.json(versions), "deer_embedding_version": set_id}),
        ("deer_assignments", {"method": method, "assigned": report.assigned, "assignment_run": report.run_id}),
    ):
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, description="deer-reid embeddings rollback",
                                                                    metadata=metadata))
    family, previous = next(iter(replaced.items()))
    click.echo(f"{family}: published {version} (was {previous}); profiles rebuilt; {method} matching assigned "
               f"{report.assigned}/{report.considered} (run {report.run_id})")


@main.command("evaluate")
@click.option("--model", "which", default="current", show_default=True,
              type=click.Choice(["current", *(f.label for f in families.FAMILIES.values()), "ensemble"]),
              help="'current' = what the matcher uses now; the others = that published model alone (or the tuned ensemble).")
@click.option("--queries", default="test", show_default=True, type=click.Choice(["val", "test"]))
@click.option("--threshold", default=0.40, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the report here.")
@_fail_cleanly
def evaluate(which: str, queries: str, threshold: float, json_out: Path | None) -> None:
    """Evaluate a published model (or the current matcher configuration) on the stored split."""
    from deer_reid_assets.core.evaluation import protocol as evaluation
    from deer_reid_assets.core import matching

    engine = _engine()
    if which not in ("current", "ensemble"):
        family = families.by_label(which).name
        with engine.connect() as conn:
            version = matching.published_versions(conn).get(family)
        if version is None:
            raise CliError(f"deer-reid: no published {family} embeddings (run `deer-reid demo` or embed first)")
        models, used = {version: 1.0}, threshold
    else:
        models, used, _ = matching.matcher_setup(engine, "auto" if which == "current" else which, threshold)
    report = evaluation.evaluate_configurations(engine, {which: models}, threshold=used, query_set=queries)[which]
    click.echo(f"{which}: {models} at threshold {used:.2f}, {queries} queries")
    click.echo(report.markdown_table())
    if json_out:
        json_out.write_text(json.dumps(json.loads(report.to_json()), indent=2))


if __name__ == "__main__":
    main()
