"""The 16-point antler layout of the existing system (its ``antler_keypoints`` table, migration 020).

Indices 0-7 are the left antler, 8-15 the right, each side in the order below. ``FLIP_IDX`` maps
each point to its mirror image (left <-> right), as YOLOv8-pose's ``flip_idx`` expects for
horizontal-flip augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

PARTS = ("main_beam", "brow_tine", "g2", "g3", "g4", "tip", "bez_tine", "royal_tine")
SIDES = ("left", "right")
KEYPOINT_NAMES = tuple(f"{side}_{part}" for side in SIDES for part in PARTS)
N_KEYPOINTS = len(KEYPOINT_NAMES)  # 16
FLIP_IDX = tuple((i + len(PARTS)) % N_KEYPOINTS for i in range(N_KEYPOINTS))

BEAM_PARTS = ("main_beam", "tip")  # the beam itself: its base and its end
TINE_PARTS = ("brow_tine", "g2", "g3", "g4", "bez_tine", "royal_tine")
IRREGULAR_PARTS = ("bez_tine", "royal_tine")  # off the whitetail's usual brow/G2-G4 series


def index(side: str, part: str) -> int:
    if side not in SIDES or part not in PARTS:
        raise ValueError(f"no antler keypoint {side!r} {part!r}")
    return SIDES.index(side) * len(PARTS) + PARTS.index(part)


def side_of(i: int) -> str:
    return SIDES[i // len(PARTS)]


def part_of(i: int) -> str:
    return PARTS[i % len(PARTS)]


@dataclass(frozen=True)
class Point:
    """One keypoint: ``x``/``y`` in pixels of the photo, visibility 0 (not visible) / 1 (occluded)
    / 2 (visible), confidence in [0, 1] (1 for a person's annotation)."""

    index: int
    x: float
    y: float
    visibility: int = 2
    confidence: float = 1.0

    @property
    def name(self) -> str:
        return KEYPOINT_NAMES[self.index]


def by_index(points) -> dict[int, Point]:
    """``{index: point}``; refuses an index outside 0-15 or given twice."""
    out: dict[int, Point] = {}
    for p in points:
        if not 0 <= p.index < N_KEYPOINTS:
            raise ValueError(f"keypoint index must be 0-{N_KEYPOINTS - 1}, got {p.index}")
        if p.index in out:
            raise ValueError(f"keypoint {p.index} given twice")
        out[p.index] = p
    return out
