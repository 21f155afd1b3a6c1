"""A deer's body size class, measured from what the database holds: its detections' boxes and classes.

Trail cameras are fixed: on roughly level ground a deer's box is taller the lower its feet are in the
frame (nearer the camera), close to a straight line per camera. So per camera a line ``height = a + b *
bottom`` is fitted to every deer box there (at least ``min_peers`` of them; with no usable slope, the
camera's median height), and each detection's **relative height** is its box height over the line's
height at its box bottom (1.0: as tall as a deer at that spot usually is). Per deer, the median over
its reviewed detections (else over the detections assigned to it); its class compares that with the
median of the deer of its sex (a buck's box includes his antlers): **small** below ``1 - margin``,
**large** above ``1 + margin``, else **medium**, once at least ``min_deer`` deer of that sex are
measured. Without a measurement, an age class on its detections (the existing system's mature / mid
/ young, or fawn) gives the class instead, and the method says so.

What this is not: a size in centimetres, or a measurement from pixels inside the box (a deer
grazing, head down, or half out of the frame reads smaller; averaging over sightings is what tames
that). A person's recorded class overrides it (``vocabulary.py``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

AGE_CLASS_SIZE = {"mature": "large", "mid": "medium", "young": "small", "fawn": "small"}


@dataclass(frozen=True)
class Box:
    """One valid detection's box (pixels) with its camera, class and deer."""

    detection_id: str
    camera: str | None
    bottom: float  # y + height
    height: float
    classification: str
    deer_id: str | None = None
    reviewed: bool = False


@dataclass(frozen=True)
class SizeSettings:
    min_peers: int = 8  # deer boxes at a camera needed to fit its line
    min_deer: int = 3  # measured deer of a sex needed to class one of them
    margin: float = 0.05  # small below 1 - margin of its sex's median, large above 1 + margin

    def __post_init__(self) -> None:
        if self.min_peers < 2 or self.min_deer < 1 or not 0 < self.margin < 1:
            raise ValueError(f"body size settings out of range: min_peers {self.min_peers} (>= 2), "
                             f"min_deer {self.min_deer} (>= 1), margin {self.margin} (0-1)")

    def method(self) -> str:
        return (f"box height / the camera's expected box height at that box bottom (a line fitted to the camera's "
                f"deer boxes, >= {self.min_peers}), median over the deer's detections, vs the median of deer of its "
                f"sex (>= {self.min_deer}): small < {1 - self.margin:.2f} <= medium <= {1 + self.margin:.2f} < large")


def camera_lines(boxes: list[Box], min_peers: int) -> dict[str | None, tuple[float, float]]:
    """camera -> (a, b) of ``height = a + b * bottom``, for cameras with at least ``min_peers`` boxes."""
    by_camera: dict[str | None, list[Box]] = {}
    for b in boxes:
        by_camera.setdefault(b.camera, []).append(b)
    lines = {}
    for camera, group in by_camera.items():
        if len(group) < min_peers:
            continue
        bottom = np.array([b.bottom for b in group], dtype=float)
        height = np.array([b.height for b in group], dtype=float)
        slope = 0.0
        if bottom.std() >= 1.0:
            slope = float(np.polyfit(bottom, height, 1)[0])
        if slope > 0:
            lines[camera] = (float(height.mean() - slope * bottom.mean()), slope)
        else:  # no perspective to read (one spot, or noise): the camera's typical box
            lines[camera] = (float(np.median(height)), 0.0)
    return lines


def relative_heights(boxes: list[Box], min_peers: int = SizeSettings.min_peers) -> dict[str, float]:
    """detection id -> box height / its camera's expected height at that bottom (cameras with a line)."""
    lines = camera_lines(boxes, min_peers)
    out = {}
    for b in boxes:
        if b.camera in lines:
            a, slope = lines[b.camera]
            expected = a + slope * b.bottom
            if expected > 0 and b.height > 0:
                out[b.detection_id] = b.height / expected
    return out


def measure(boxes: list[Box], deer_sex: dict[str, str], settings: SizeSettings | None = None) -> dict[str, dict]:
    """deer id -> its measured body size (``physical_features["body_size"]["measured"]``): class (None
    when it cannot be told), relative height, its ratio to its sex's median, detections and cameras
    used, and the method; deer with neither a measurement nor an age class are left out."""
    settings = settings or SizeSettings()
    rel = relative_heights(boxes, settings.min_peers)
    per_deer: dict[str, list[Box]] = {}
    for b in boxes:
        if b.deer_id:
            per_deer.setdefault(b.deer_id, []).append(b)
    values: dict[str, dict] = {}
    for deer, own in per_deer.items():
        reviewed = [b for b in own if b.reviewed and b.detection_id in rel]
        used = reviewed or [b for b in own if b.detection_id in rel]
        ages = Counter(c for b in own if (c := (b.classification or "").lower()) in AGE_CLASS_SIZE)
        entry: dict = {"age_class": ages.most_common(1)[0][0] if ages else None}
        if used:
            entry.update(relative_height=float(np.median([rel[b.detection_id] for b in used])), detections=len(used),
                         cameras=len({b.camera for b in used}),
                         **{"from": "reviewed detections" if reviewed else "detections assigned to it"})
        if used or entry["age_class"]:
            values[deer] = entry
    by_sex: dict[str, list[float]] = {}
    for deer, entry in values.items():
        if "relative_height" in entry:
            by_sex.setdefault(deer_sex.get(deer, "unknown"), []).append(entry["relative_height"])
    out = {}
    for deer, entry in values.items():
        sex = deer_sex.get(deer, "unknown")
        peers = by_sex.get(sex, [])
        result = {"class": None, **entry}
        if "relative_height" in entry and len(peers) >= settings.min_deer:
            ratio = entry["relative_height"] / float(np.median(peers))
            result.update(versus_sex_median=round(ratio, 3), method=settings.method(),
                          **{"class": "small" if ratio < 1 - settings.margin else
                             "large" if ratio > 1 + settings.margin else "medium"})
        elif entry["age_class"]:
            result.update(method=f"age class {entry['age_class']} on its detections (no box measurement usable)",
                          **{"class": AGE_CLASS_SIZE[entry["age_class"]]})
        else:
            result["method"] = (f"not classed: {len(peers)} measured {sex} deer, {settings.min_deer} needed; "
                                + settings.method())
        if "relative_height" in result:
            result["relative_height"] = round(result["relative_height"], 3)
        out[deer] = result
    return out
