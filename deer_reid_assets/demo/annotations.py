"""A person's antler annotations of the synthetic photos, as the user would export them from Label Studio.

Only the *labelled* buck detections (those ``detections.json`` gives a human ``label``: the same
labelled fraction as the identities) are annotated, each with a box around the whole animal and
its antler points that are in view (from ``ground_truth.json``'s keypoints; Label Studio has no
"occluded", so every annotated point is visible); of two labelled bucks whose boxes overlap only the
first is annotated (without relations, whose points are whose is not clear). Written to
``antler_annotations/label_studio_export.json``, which ``deer-reid antlers import`` (and the
``antler_annotations`` asset) read like any Label Studio export.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from deer_reid_assets.core.antlers.annotations import AnnotatedImage, Annotation, RelPoint
from deer_reid_assets.core.antlers.labelstudio import to_tasks

EXPORT = Path("antler_annotations") / "label_studio_export.json"


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return abs(a[0] - b[0]) * 2 < a[2] + b[2] and abs(a[1] - b[1]) * 2 < a[3] + b[3]


def write_antler_annotations(root: Path, images: list[dict], truth: dict[str, dict], width: int, height: int) -> int:
    """Write the export under ``root``; the number of annotated bucks."""
    annotated, n = [], 0
    for image in images:
        anns = []
        for det in image["detections"]:
            gt = truth[det["key"]]
            if "label" not in det or gt["sex"] != "buck":
                continue
            rows = gt["antler_keypoints"]
            b = det["bbox"]
            xs = [b["x"], b["x"] + b["width"]] + [x for x, _, v in rows if v]
            ys = [b["y"], b["y"] + b["height"]] + [y for _, y, v in rows if v]
            x0, x1 = max(0.0, min(xs) - 1), min(float(width), max(xs) + 1)
            y0, y1 = max(0.0, min(ys) - 1), min(float(height), max(ys) + 1)
            box = ((x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height)
            if any(_overlap(box, other.box) for other in anns):
                continue  # two bucks overlapping: a person could not tell whose points are whose
            anns.append(Annotation("buck", box, [RelPoint(i, x / width, y / height, 2)
                                                 for i, (x, y, v) in enumerate(rows) if v]))
        if anns:
            name = Path(image["file"]).name
            prefix = hashlib.sha256(name.encode()).hexdigest()[:8]  # Label Studio's upload prefix
            annotated.append(AnnotatedImage(f"{prefix}-{name}", anns, width=width, height=height))
            n += len(anns)
    out = Path(root) / EXPORT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_tasks(annotated, image_url="/data/upload/1/"), indent=1) + "\n", encoding="utf-8")
    return n
