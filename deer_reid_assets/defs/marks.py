"""The ``physical_features`` asset: the marks people recorded (throat patch, flank marks, ear notches)
and each deer's body size class measured from its boxes, written into ``deer.physical_features``
beside the antler seasons that ``antler_features`` writes."""

from typing import Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from .automation import DOWNSTREAM
from .common import OWNERS, core_errors, md_table
from .matching import deer_assignments
from .resources import DatabaseResource, ImageStoreResource


class PhysicalFeaturesConfig(dg.Config):
    marks_path: Optional[str] = Field(default=None, description="A file of marks people recorded "
                                      "(deer-reid-marks/1) or a folder of them; unset = <upload folder>/marks.")
    min_peers: int = Field(default=8, description="Deer boxes a camera needs before its perspective line is fitted.")
    min_deer: int = Field(default=3, description="Measured deer of a sex needed to class one of them.")
    margin: float = Field(default=0.05, description="small below 1 - margin of its sex's median, large above 1 + margin.")


@dg.asset(
    deps=[deer_assignments],
    group_name="antlers",
    kinds={"python", "postgres"},
    owners=OWNERS,
    code_version="1",
    automation_condition=DOWNSTREAM,
    description="deer.physical_features besides the antlers: the marks people recorded on the review app's deer "
    "pages or in a file (throat patch, flank mark and ear notch per side: recorded, not read from pixels; files from "
    "config marks_path, by default the upload folder's marks/) and a body size class per deer, measured: each box's "
    "height over its camera's expected height at that box bottom (a line fitted per fixed camera), the median per "
    "deer, compared with the deer of its sex (else its age class); a person's recorded class overrides it.",
)
def physical_features(context: dg.AssetExecutionContext, config: PhysicalFeaturesConfig, database: DatabaseResource,
                      image_store: ImageStoreResource) -> dg.MaterializeResult:
    from pathlib import Path

    from deer_reid_assets.core.marks import body_size, features, records, vocabulary

    engine = database.get_engine()
    path = Path(config.marks_path) if config.marks_path else image_store.uploads / "marks"
    imported = f"nothing: {path} does not exist"
    errors: list[str] = []
    if path.exists():
        report = records.import_file(engine, path)
        errors = report.errors
        for line in errors[:20]:
            context.log.warning(f"not recorded: {line}")
        imported = f"{report.recorded} deer recorded, {report.unchanged} unchanged, {len(errors)} not used ({path})"
    with core_errors():
        settings = body_size.SizeSettings(config.min_peers, config.min_deer, config.margin)
        summary = features.rebuild(engine, settings)
    names = _names(engine, sorted({b.deer_id for b in summary["boxes"] if b.deer_id}))
    rows = [{"deer": names.get(d) or d[:8],
             "marks": vocabulary.describe(vocabulary.from_json(p.get("marks") or {})),
             "body_size": (p.get("body_size") or {}).get("class"), "source": (p.get("body_size") or {}).get("source"),
             "relative_height": ((p.get("body_size") or {}).get("measured") or {}).get("relative_height")}
            for d, p in list(summary["patches"].items())[:40]]
    rel = summary["relative_heights"]
    per_detection = [{"detection": b.detection_id[:8], "deer": names.get(b.deer_id) or (b.deer_id or "")[:8],
                      "box_height_px": round(b.height, 1), "relative_height": round(rel[b.detection_id], 3)}
                     for b in summary["boxes"] if b.detection_id in rel][:40]
    return dg.MaterializeResult(metadata={
        "marks_imported": imported,
        "marks_not_used_first": "\n".join(errors[:20]) or "none",
        "deer": summary["deer"],
        "deer_with_marks": summary["deer_with_marks"],
        "body_size_measured": summary["body_size_measured"],
        "body_size_from_age_class": summary["body_size_from_age_class"],
        "body_size_recorded": summary["body_size_recorded"],
        "body_size_classes": summary["body_size_classes"],
        "detections_with_relative_height": len(summary["relative_heights"]),
        "body_size_method": settings.method(),
        "physical_features": md_table(pd.DataFrame(rows)) if rows else "none",
        "relative_heights_first": md_table(pd.DataFrame(per_detection)) if per_detection else "none",
    })


def _names(engine, deer_ids: list[str]) -> dict[str, str]:
    from deer_reid_assets.core.store import review

    with engine.connect() as conn:
        return review.deer_identities(conn, deer_ids)
