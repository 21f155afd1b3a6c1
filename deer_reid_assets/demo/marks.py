"""The demo hunter's records of the marks of the deer he reviewed, and the generator's truth of them.

For every deer with a labelled sighting the hunter records, as a person would from those photos, the
throat patch's size (seen from either side) and, per side he saw in a labelled photo, that flank's
mark and that ear's notch (``none`` where there is none); he records no body size (the pipeline
measures it). Written as ``marks/recorded_marks.json`` (``deer-reid-marks/1``), which the
``physical_features`` asset imports like any person's file.
"""

from __future__ import annotations

import json
from pathlib import Path

from .individuals import _Individual

HUNTER = "demo hunter"
MARKS_FILE = Path("marks") / "recorded_marks.json"
_SIDES = ("left", "right")


def throat_class(size: float) -> str:
    """The generator's throat patch scale (0.5-1.4) as the vocabulary's size."""
    return "small" if size < 0.8 else "medium" if size < 1.1 else "large"


def true_marks(ind: _Individual) -> dict[str, str]:
    """Every mark of an individual, both sides, in the vocabulary of ``core.marks.vocabulary``."""
    out = {"throat_patch": throat_class(ind.throat_size)}
    for i, side in enumerate(_SIDES):
        out[f"flank_{side}"] = ind.marks[i].kind
        out[f"ear_notch_{side}"] = "notched" if ind.ear_notches[i] is not None else "none"
    return out


def side_seen(pose: str) -> str:
    """Facing right, the camera sees the deer's own left side."""
    return "left" if pose == "right" else "right"


def write_hunter_marks(root: Path, individuals: list[_Individual], seen: dict[int, set[str]]) -> Path:
    """``seen``: individual index -> the sides shown in its labelled sightings."""
    records = []
    for index in sorted(seen):
        truth = true_marks(individuals[index])
        entry = {"name": individuals[index].name, "throat_patch": truth["throat_patch"]}
        for side in _SIDES:
            if side in seen[index]:
                entry[f"flank_{side}"] = truth[f"flank_{side}"]
                entry[f"ear_notch_{side}"] = truth[f"ear_notch_{side}"]
        records.append(entry)
    path = root / MARKS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": "deer-reid-marks/1", "reviewer": HUNTER, "deer": records}
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path
