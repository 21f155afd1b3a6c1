"""The upload fast path: one upload batch from its photos to assignments (or proposals) in seconds.

Nothing of the collection is recomputed. The batch's photos are run through the detector (when one is
configured) and cropped; its new crops are embedded with the **published** embedding versions (each
version's own weights, image size and saved projection: no new version is staged, nothing is
refitted, nothing is published); then only its new detections are matched against the current
profiles with the current matcher settings (``core.matcher_setup``), through the same
``matching.assign_detections`` that ``deer_assignments`` runs, so the run is logged with every
detection's previous deer and can be rolled back. The matcher's own families are embedded first and
the assignments written before the other published families are embedded (those vectors keep every
published version complete, so it can still be published again or rolled back to).

Plain code: no Dagster here (the asset ``upload_assignments`` in ``defs/upload.py`` calls it).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import sqlalchemy as sa

from deer_reid_assets.core import families, matching
from deer_reid_assets.core.embed.versions import published_versions, usable_crops
from deer_reid_assets.core.families import EmbedderSettings
from deer_reid_assets.core.ingest import crops as crops_core
from deer_reid_assets.core.ingest import detector
from deer_reid_assets.core.matcher_setup import matcher_setup
from deer_reid_assets.core.store import embedding_versions
from deer_reid_assets.core.store import upload_batches as store

NOTHING_PUBLISHED = ("nothing is published yet: these detections are cropped, and the first run of the whole "
                     "pipeline (automation, `deer-reid demo` / `report`, or reid_pipeline) embeds and matches them")


class UploadPathError(ValueError):
    """A published version this deployment cannot embed with (its weights are not here)."""


@dataclass
class UploadReport:
    batch_detections: int = 0  # valid detections of the batch
    new_crops: int = 0
    rejected_crops: int = 0
    reject_examples: list[tuple[str, str]] = field(default_factory=list)
    photos_run_through_detector: int = 0
    embedded: dict[str, int] = field(default_factory=dict)  # version -> vectors added now
    matched: list[str] = field(default_factory=list)  # detection ids matched by this run
    assignment: matching.AssignReport | None = None
    models: dict[str, float] = field(default_factory=dict)
    method: str | None = None
    skipped: str | None = None  # why nothing was matched
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> wall seconds


class _Clock:
    def __init__(self, report: UploadReport) -> None:
        self.report, self.last = report, time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.report.seconds[phase] = self.report.seconds.get(phase, 0.0) + now - self.last
        self.last = now


def process_batch(engine: sa.Engine, batch: str, store_root: Path, settings: EmbedderSettings, *,
                  detector_weights: str | None = None, detector_classes: list[str] | None = None,
                  min_confidence: float = 0.25, log: Callable[[str], None] = lambda _: None,
                  **match_options) -> UploadReport:
    """Detect (the batch's photos without detections), crop (its detections without a crop), then
    :func:`match_new_detections` on the batch's detections."""
    report = UploadReport()
    clock = _Clock(report)
    found = detector.detect_pending(engine, detector_weights, classes=detector_classes, min_confidence=min_confidence,
                                    device=settings.device, image_batches=[batch])
    report.photos_run_through_detector = found.images_processed
    clock.lap("detect")
    cropped = crops_core.make_crops(engine, store_root, image_batches=[batch])
    report.new_crops, report.rejected_crops, report.reject_examples = cropped.ok, cropped.rejected, cropped.examples
    clock.lap("crop")
    with engine.connect() as conn:
        ids = store.batch_detections(conn, [batch])
    report.batch_detections = len(ids)
    return match_new_detections(engine, ids, settings, report=report, log=log, **match_options)


def match_new_detections(engine: sa.Engine, detection_ids: list[str], settings: EmbedderSettings, *,
                         method: str = "auto", threshold: float = 0.40, top_k: int = 5,
                         antler_tolerance: int | None = 0, run_id: str | None = None,
                         report: UploadReport | None = None, log: Callable[[str], None] = lambda _: None
                         ) -> UploadReport:
    """Embed the crops of ``detection_ids`` that the published versions lack, then match the ones no
    matching run has seen (unreviewed, valid, with a crop) against the current profiles."""
    report = report or UploadReport()
    clock = _Clock(report)
    with engine.connect() as conn:
        published = {f: v for f, v in published_versions(conn).items() if f in families.FAMILIES}
        crops = usable_crops(conn, detection_ids) if detection_ids else []
    if families.BASELINE not in published:
        report.skipped = NOTHING_PUBLISHED
        return report
    models, threshold, report.method = matcher_setup(engine, method, threshold)
    report.models = models
    first = [f for f, v in published.items() if v in models]
    for family in first:
        _embed(engine, published[family], crops, settings, report, log, clock)
    with engine.connect() as conn:
        todo = store.never_matched(conn, [d for d, _ in crops])
        have = _has_vectors(conn, models, todo)
        todo = [d for d in todo if all(have[d])]
    clock.lap("select")
    if todo:
        report.assignment = matching.assign_detections(engine, models, threshold=threshold, top_k=top_k,
                                                       method=report.method, run_id=run_id,
                                                       antler_tolerance=antler_tolerance, detection_ids=todo)
        report.matched = todo
    else:
        report.skipped = "no new detection to match (every one is reviewed, rejected at cropping or matched before)"
    clock.lap("match")
    for family in published:
        if family not in first:
            _embed(engine, published[family], crops, settings, report, log, clock, after_match=True)
    return report


def _has_vectors(conn: sa.Connection, models: dict[str, float], ids: list[str]) -> dict[str, list[bool]]:
    """Per detection, whether each matcher version has its vector (a crop whose photo became unreadable
    between cropping and embedding has none)."""
    rows = store.vectors_present(conn, list(models), ids)
    have: dict[str, set[str]] = {}
    for det, version in rows:
        have.setdefault(det, set()).add(version)
    return {d: [v in have.get(d, set()) for v in models] for d in ids}


def _embed(engine: sa.Engine, version: str, crops: list[tuple[str, str]], settings: EmbedderSettings,
           report: UploadReport, log: Callable[[str], None], clock: _Clock, *, after_match: bool = False) -> None:
    """Add the vectors ``version`` lacks for ``crops``; times 'load_models' (torch and the backbone
    included, the first time in a process) and 'embed' (or '..._after_match')."""
    from deer_reid_assets.core.ingest.imaging import ImageError, load_image

    suffix = "_after_match" if after_match else ""
    with engine.connect() as conn:
        todo = store.lacking_vectors(conn, version, crops)
        row = embedding_versions.version_row(conn, version)
    if not todo:
        report.embedded[version] = 0
        return
    embedder = embedder_for_version(engine, row, settings)
    clock.lap("load_models" + suffix)
    images, ids = [], []
    for det, path in todo:
        try:
            images.append(load_image(path))
            ids.append(det)
        except ImageError as exc:  # costs only this crop
            log(f"crop of detection {det} unreadable, not embedded: {exc}")
    vectors = embedder.embed(images) if images else None
    with engine.begin() as conn:
        report.embedded[version] = store.add_vectors(conn, version, ids, vectors) if images else 0
    clock.lap("embed" + suffix)


def embedder_for_version(engine: sa.Engine, row: sa.Row, settings: EmbedderSettings):
    """The embedder that produced the embedding version ``row``, with its saved projection: its weights
    and image size are read from the version itself (the deployment's settings give device and batch
    size, and the path of a checkpoint); UploadPathError when this deployment cannot rebuild it."""
    from deer_reid_assets.core.embed.projection import FeatureProjection

    family = families.get(row.model_family)
    config = row.config or {}
    wanted = {k: config.get(k) for k in ("family", "weights_id", "projection", "image_size", "code_version")}
    settings = replace(settings, image_size=int(config.get("image_size") or settings.image_size))
    weights_id = str(row.weights_id or "")
    if family.pretrained and weights_id.startswith("random-s") and weights_id[8:].isdigit():
        settings = replace(settings, weights="random", seed=int(weights_id[8:]))
    elif family.pretrained and row.weights_source == "imagenet":
        settings = replace(settings, weights="imagenet")
    embedder = _embedder(family.name, settings, weights_id, engine)
    try:
        embedder.projection = FeatureProjection.load(Path(config["projection_path"]))
    except (OSError, KeyError) as exc:
        raise UploadPathError(f"the projection of published version {row.version} cannot be read ({exc}): roll back "
                              f"to another version or re-embed with {family.asset}") from None
    built = {k: embedder.version_key()[k] for k in wanted}
    if built != wanted:
        raise UploadPathError(
            f"published version {row.version} was embedded with {wanted['weights_id']} at {wanted['image_size']} px; "
            f"this deployment builds {built['weights_id']} at {built['image_size']} px: set ModelWeightsResource to "
            f"those weights, or publish a version of {family.asset} made with these")
    return embedder


def _embedder(family: str, settings: EmbedderSettings, weights_id: str, engine: sa.Engine):
    if family == families.FINETUNED:
        from deer_reid_assets.core.embed.finetuned import FinetunedEmbedder
        from deer_reid_assets.core.store.reid_models import model_with_sha_prefix

        model = model_with_sha_prefix(engine, weights_id.removeprefix("reid-")) if weights_id.startswith("reid-") else None
        if model is None:
            raise UploadPathError(f"the fine-tuned model of {weights_id} is not registered or its checkpoint file is "
                                  "gone: train again (deer-reid train) or roll back to another version")
        return FinetunedEmbedder(model["checkpoint_path"], device=settings.device, batch_size=settings.batch_size)
    return _pretrained(family, settings)


@functools.lru_cache(maxsize=4)
def _pretrained(family: str, settings: EmbedderSettings):
    """Backbones are kept for the process's later batches (the projection is set per version)."""
    return families.get(family).embedder(None, settings)
