"""``deer-reid embed``, ``embeddings list / rollback`` and ``evaluate``: embedding versions."""

from __future__ import annotations

import json
from pathlib import Path

import click

from deer_reid_assets.core import families
from deer_reid_assets.core.store import db

from .common import CliError, engine, fail_cleanly, instance, main, materialize
from .summary import RunSummary


def _publish_and_rebuild(eng, resources: dict, *, run_config: dict | None = None) -> RunSummary:
    """What follows new or rolled-back embeddings, as Dagster runs recorded in the instance:
    published_embeddings (its audit-gated decision), then deer_profiles once a baseline is published."""
    from deer_reid_assets.core.embed import versions
    from deer_reid_assets.defs.embeddings import published_embeddings
    from deer_reid_assets.defs.matching import deer_profiles

    inst = instance(db.database_url(start_embedded=False), write_env_file=False)
    metadata = materialize([published_embeddings], run_config or {}, resources, inst).metadata
    with eng.connect() as conn:
        has_baseline = versions.published_version(conn, families.BASELINE) is not None
    if has_baseline:
        metadata.update(materialize([deer_profiles], run_config or {}, resources, inst).metadata)
    return RunSummary.from_metadata(metadata)


@main.command("embed")
@click.option("--model", "family", default="all", show_default=True, type=click.Choice([*families.PRETRAINED, "all"]))
@click.option("--weights", default="auto", show_default=True, help="'auto', 'imagenet', 'random' or a checkpoint path.")
@click.option("--image-size", default=224, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--loader-workers", type=int, default=None,
              help="Processes decoding and resizing crops beside the model [default: 0 on a CPU, min(8, cores-1) on a GPU].")
@click.option("--refit", is_flag=True, help="Fit a new projection (a new version) instead of reusing the current one.")
@click.option("--chunk", default=128, show_default=True, help="Crops per committed chunk (resume granularity).")
@click.option("--projection-sample", default=1500, show_default=True, help="Crops sampled to fit a new projection.")
@click.option("--no-publish", is_flag=True, help="Leave the completed version staged (audit it first).")
@fail_cleanly
def embed(family: str, weights: str, image_size: int, batch_size: int, device: str, loader_workers: int | None,
          refit: bool, chunk: int, projection_sample: int, no_publish: bool) -> None:
    """(Re-)embed every usable crop, in committed chunks: an interrupted run resumes where it stopped;
    each version is audited, then published_embeddings publishes what passed and deer_profiles rebuilds
    the profiles (Dagster runs, as in the graph)."""
    from deer_reid_assets.core import audit
    from deer_reid_assets.core.embed import versions
    from deer_reid_assets.definitions import default_resources
    from deer_reid_assets.defs.resources import ComputeResource, ModelWeightsResource

    eng = engine()
    resources = default_resources()
    resources["compute"] = ComputeResource(device=device, batch_size=batch_size, loader_workers=loader_workers)
    resources["model_weights"] = ModelWeightsResource(weights=weights, image_size=image_size)
    settings = families.EmbedderSettings(weights=weights, image_size=image_size, device=device, batch_size=batch_size,
                                         loader_workers=loader_workers)
    for name in (families.PRETRAINED if family == "all" else [family]):
        embedder = families.get(name).embedder(eng, settings)
        click.echo(f"{name}: {embedder.weights.description}")
        with click.progressbar(length=1, label=f"  embedding ({name})", show_pos=True) as bar:
            def progress(done: int, total: int) -> None:
                bar.length = total
                bar.update(done - bar.pos)

            report = versions.embed_crops(eng, embedder, wait=False, artifacts=resources["image_store"].artifacts,
                                          refit=refit, chunk=chunk, sample_size=projection_sample, progress=progress)
        state = "resumed, " if report.resumed else ""
        click.echo(f"  {report.version}: {report.new_vectors} new vectors ({state}{report.total_vectors} in all, "
                   f"{report.per_detection_ms:.1f} ms per new detection)")
        result = audit.audit_version(eng, report.version)  # what the blocking check `<asset>_audit` runs
        versions.record_audit(eng, report.version, result.passed, result.to_json())
        failed = [c["check"] + ": " + c["detail"] for c in result.checks if not c["passed"]]
        click.echo(f"  audit against {result.against or 'nothing published'}: "
                   + ("passed" if result.passed else "FAILED (" + "; ".join(failed) + ")")
                   + f"; {result.changed} assignment(s) would change")
    if not no_publish:
        summary = _publish_and_rebuild(eng, resources)
        click.echo(summary.publish_table)


@main.group("embeddings")
def embeddings_group() -> None:
    """Embedding versions: list them, roll back to an earlier one."""


@embeddings_group.command("list")
@fail_cleanly
def embeddings_list() -> None:
    """Every embedding version with its status, audit and coverage."""
    from deer_reid_assets.core.embed import versions

    with engine().connect() as conn:
        rows = versions.list_versions(conn)
    if not rows:
        click.echo("no embedding versions yet")
    click.echo(f"{'version':20s} {'family':13s} {'status':10s} {'audit':7s} {'vectors':>7s}  "
               "created              weights")
    for r in rows:
        audit = {True: "passed", False: "FAILED", None: "-"}[r["audit_passed"]]
        click.echo(f"{r['version']:20s} {r['model_family']:13s} {r['status']:10s} {audit:7s} {r['n_embeddings']:7d}  "
                   f"{r['created_at']:%Y-%m-%d %H:%M:%S}  {r['weights_description'][:60]}")


@embeddings_group.command("rollback")
@click.argument("version")
@click.option("--threshold", default=0.40, show_default=True, help="Operating threshold when no tuned one applies.")
@fail_cleanly
def embeddings_rollback(version: str, threshold: float) -> None:
    """Publish VERSION again (it must be complete and have passed its audit), then rebuild the profiles
    and re-match as Dagster runs of deer_profiles and deer_assignments."""
    import dagster as dg

    from deer_reid_assets.core.embed import versions
    from deer_reid_assets.definitions import default_resources
    from deer_reid_assets.defs.embeddings import publish_metadata, published_embeddings
    from deer_reid_assets.defs.matching import deer_assignments, deer_profiles

    eng = engine()
    rows = versions.rollback(eng, version)
    inst = instance(db.database_url(start_embedded=False), write_env_file=False)
    inst.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=published_embeddings.key, description=f"deer-reid embeddings rollback {version}",
        metadata=publish_metadata(rows)))
    run_config = {"ops": {deer_assignments.op.name: {"config": {"threshold": threshold}}}}
    outcome = materialize([deer_profiles, deer_assignments], run_config, default_resources(), inst)
    summary = RunSummary.from_metadata(outcome.metadata)
    (row,) = [r for r in rows if r["action"] != "unchanged"]
    click.echo(f"{row['family']}: {row['action']}; profiles rebuilt; {summary.method} matching assigned "
               f"{summary.assigned}/{summary.considered} "
               f"(run {summary.assignment_run})")


@main.command("evaluate")
@click.option("--model", "which", default="current", show_default=True,
              type=click.Choice(["current", *(f.label for f in families.FAMILIES.values()), "ensemble"]),
              help="'current' = what the matcher uses now; the others = that published model alone (or the tuned "
              "ensemble).")
@click.option("--queries", default="test", show_default=True, type=click.Choice(["val", "test"]))
@click.option("--threshold", default=0.40, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the report here.")
@fail_cleanly
def evaluate(which: str, queries: str, threshold: float, json_out: Path | None) -> None:
    """Evaluate a published model (or the current matcher configuration) on the stored split."""
    from deer_reid_assets.core.embed.versions import published_versions
    from deer_reid_assets.core.evaluation import protocol
    from deer_reid_assets.core.matcher_setup import matcher_setup

    eng = engine()
    if which not in ("current", "ensemble"):
        family = families.by_label(which).name
        with eng.connect() as conn:
            version = published_versions(conn).get(family)
        if version is None:
            raise CliError(f"deer-reid: no published {family} embeddings (run `deer-reid demo` or embed first)")
        models, used = {version: 1.0}, threshold
    else:
        models, used, _ = matcher_setup(eng, "auto" if which == "current" else which, threshold)
    report = protocol.evaluate_configurations(eng, {which: models}, threshold=used, query_set=queries)[which]
    click.echo(f"{which}: {models} at threshold {used:.2f}, {queries} queries")
    click.echo(report.markdown_table())
    if json_out:
        json_out.write_text(json.dumps(json.loads(report.to_json()), indent=2))
