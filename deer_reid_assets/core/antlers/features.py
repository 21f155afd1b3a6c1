"""Antler features of one buck detection from its 16 keypoints.

* **points per side**: the tines (brow, G2-G4, bez, royal) seen (visibility >= 1) with confidence
  >= ``min_confidence``, plus one for the beam itself when its base or tip is seen (hunters count
  the beam's end as a point): a typical 8-pointer has brow, G2, G3 and the beam on each side.
* a side is **confident** when both its beam base and its tip are seen confidently (the whole beam
  is in view, so a missing tine is really missing); the detection is confident when both sides are.
* **inside spread**: the widest horizontal distance between left and right points of the same part
  along the beams (G2, G3, G4, tip), divided by the head size (the distance between the two beam
  bases unless a head size is given): a unitless ratio comparable between photos at any distance.
* **typical**: both sides confident, left and right counts within one point, and no bez/royal tine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deer_reid_assets.core.antlers import layout

DEFAULT_MIN_CONFIDENCE = 0.5
_SPREAD_PARTS = ("g2", "g3", "g4", "tip")


@dataclass(frozen=True)
class AntlerFeatures:
    left_points: int
    right_points: int
    left_confident: bool
    right_confident: bool
    spread_ratio: float | None
    typical: bool | None  # None when it cannot be judged (a side not confidently seen)
    keypoints_used: int

    @property
    def total_points(self) -> int:
        return self.left_points + self.right_points

    @property
    def confident(self) -> bool:
        return self.left_confident and self.right_confident

    @property
    def has_antlers(self) -> bool:
        return self.total_points > 0

    def description(self) -> str:
        if not self.has_antlers:
            return "no antlers seen"
        if self.confident:
            kind = "typical" if self.typical else "non-typical"
            text = f"{self.total_points}-point {kind} ({self.left_points}L/{self.right_points}R)"
        else:
            left = str(self.left_points) if self.left_confident else f"{self.left_points}+"
            right = str(self.right_points) if self.right_confident else f"{self.right_points}+"
            text = f"at least {self.total_points} points ({left}L/{right}R, partly unseen)"
        if self.spread_ratio is not None:
            text += f", inside spread {self.spread_ratio:.1f}x head"
        return text

    def as_dict(self) -> dict:
        """The antler part of ``physical_features`` (JSON-ready)."""
        return {
            "left_points": self.left_points, "right_points": self.right_points,
            "total_points": self.total_points, "confident": self.confident,
            "left_confident": self.left_confident, "right_confident": self.right_confident,
            "spread_ratio": None if self.spread_ratio is None else round(self.spread_ratio, 3),
            "typical": self.typical, "description": self.description(),
        }


def _seen(p: layout.Point | None, min_confidence: float) -> bool:
    return p is not None and p.visibility >= 1 and p.confidence >= min_confidence


def compute(points, *, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
            head_size: float | None = None) -> AntlerFeatures:
    """Features from an iterable of ``layout.Point`` (missing indices count as not visible)."""
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be within [0, 1], got {min_confidence}")
    pts = layout.by_index(points)
    counts, confident = {}, {}
    used = 0
    for side in layout.SIDES:
        get = {part: pts.get(layout.index(side, part)) for part in layout.PARTS}
        seen = {part: _seen(p, min_confidence) for part, p in get.items()}
        tines = sum(seen[part] for part in layout.TINE_PARTS)
        beam = any(seen[part] for part in layout.BEAM_PARTS)
        counts[side] = tines + int(beam)
        confident[side] = all(seen[part] for part in layout.BEAM_PARTS)
        used += sum(seen.values())
    spread = _spread_ratio(pts, min_confidence, head_size)
    irregular = any(_seen(pts.get(layout.index(s, part)), min_confidence)
                    for s in layout.SIDES for part in layout.IRREGULAR_PARTS)
    both = confident["left"] and confident["right"]
    typical = (abs(counts["left"] - counts["right"]) <= 1 and not irregular) if both else None
    return AntlerFeatures(left_points=counts["left"], right_points=counts["right"],
                          left_confident=confident["left"], right_confident=confident["right"],
                          spread_ratio=spread, typical=typical, keypoints_used=used)


def _spread_ratio(pts: dict[int, layout.Point], min_confidence: float, head_size: float | None) -> float | None:
    widths = []
    for part in _SPREAD_PARTS:
        a, b = pts.get(layout.index("left", part)), pts.get(layout.index("right", part))
        if _seen(a, min_confidence) and _seen(b, min_confidence):
            widths.append(abs(a.x - b.x))
    if not widths:
        return None
    if head_size is None:
        a, b = pts.get(layout.index("left", "main_beam")), pts.get(layout.index("right", "main_beam"))
        if not (_seen(a, min_confidence) and _seen(b, min_confidence)):
            return None
        head_size = math.hypot(a.x - b.x, a.y - b.y)
    if not head_size or head_size <= 0 or not math.isfinite(head_size):
        return None
    return max(widths) / head_size
