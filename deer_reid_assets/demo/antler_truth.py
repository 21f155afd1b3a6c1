"""Antler keypoint ground truth of the synthetic bucks, in the existing system's 16-point layout.

Where ``drawing`` draws an antler it reports the beam base (``main_beam``), each tine's tip (brow,
G2, G3, G4 in order up the beam; a fifth tine is stored as ``royal_tine``, since the layout has no
G5) and the beam's tip, in deer coordinates. ``render`` turns them into image positions with a
visibility: 2 visible; 1 occluded (under a bush or branch, behind a deer in front, or, on the far
antler, behind the deer's own head, neck, ear or near antler); 0 outside the frame. Points a side
does not have (a 3-point side has no G3 or G4) are ``[0, 0, 0]``, as in YOLOv8-pose labels. A side
with ``n`` points (``antler_points_left`` / ``_right``) has its beam and ``n - 1`` tines. Does carry none.

Antler seasons: bucks cast their antlers in late winter and regrow them, so a buck may carry another
configuration in another season. With ``SyntheticConfig.n_seasons = 2`` every buck also has the
configuration of the season before (``antler_previous``) and about half of the photos are taken
one year earlier; ``season_view`` gives the buck as he looked then.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from deer_reid_assets.core.antlers import layout

if TYPE_CHECKING:
    from .individuals import _Individual

TINE_PARTS = ("brow_tine", "g2", "g3", "g4", "royal_tine")  # up the beam, in drawing order


@dataclass(frozen=True)
class AntlerPoint:
    """One keypoint in deer coordinates; ``layer`` = how many shapes were drawn before it was known
    (shapes from there on may hide it)."""

    side: str
    part: str
    x: float
    y: float
    layer: int

    @property
    def index(self) -> int:
        return layout.index(self.side, self.part)


def antler_points(side: str, beam: np.ndarray, tips: list[np.ndarray], *, layer: int) -> list[AntlerPoint]:
    """The keypoints of one drawn antler: beam base, tine tips (at most 5), beam tip."""
    if len(tips) > len(TINE_PARTS):
        raise ValueError(f"{len(tips)} tines on one side: the layout holds {len(TINE_PARTS)}")
    named = [("main_beam", beam[0]), *zip(TINE_PARTS, tips), ("tip", beam[-1])]
    return [AntlerPoint(side, part, float(p[0]), float(p[1]), layer) for part, p in named]


def _inside(x: float, y: float, polygon: np.ndarray) -> bool:
    """Even-odd rule."""
    px, py = polygon[:, 0], polygon[:, 1]
    qx, qy = np.roll(px, 1), np.roll(py, 1)
    crosses = (py > y) != (qy > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        at = qx + (y - qy) * (px - qx) / (py - qy)
    return bool(np.count_nonzero(crosses & (x < at)) % 2)


def self_hidden(points: list[AntlerPoint], shapes: list) -> list[bool]:
    """Per point: whether a shape the deer drew after it covers it."""
    return [any(_inside(p.x, p.y, s.points) for s in shapes[p.layer:]) for p in points]


def to_image(points: list[AntlerPoint], hidden: list[bool], origin: tuple[float, float], ppu: float,
             sign: float) -> list[list]:
    """``[index, x, y, visibility]`` in image pixels (visibility 2, or 1 where self-hidden)."""
    ox, oy = origin
    return [[p.index, ox + sign * p.x * ppu, oy + p.y * ppu, 1 if h else 2] for p, h in zip(points, hidden)]


def cover(points: list[list], mask: np.ndarray, left: int = 0, top: int = 0) -> None:
    """Mark as occluded (1) the visible points that fall on ``mask`` (True = covered), placed at
    (``left``, ``top``) in the image."""
    h, w = mask.shape
    for p in points:
        col, row = int(p[1]) - left, int(p[2]) - top
        if p[3] == 2 and 0 <= row < h and 0 <= col < w and mask[row, col]:
            p[3] = 1


def in_frame(points: list[list], width: int, bottom: int) -> None:
    """Points outside the photo (or on its info bar) are not visible (0)."""
    for p in points:
        if not (0 <= p[1] < width and 0 <= p[2] < bottom):
            p[3] = 0


def as_rows(points: list[list]) -> list[list[float]]:
    """16 rows ``[x, y, visibility]`` in layout order (``[0, 0, 0]`` where the buck has no such point)."""
    rows = [[0.0, 0.0, 0] for _ in range(layout.N_KEYPOINTS)]
    for index, x, y, v in points:
        rows[index] = [round(float(x), 1), round(float(y), 1), int(v)] if v else [0.0, 0.0, 0]
    return rows


def season_view(ind: _Individual, season: int) -> _Individual:
    """The individual as he looked ``season`` antler seasons before the latest (0: as he is)."""
    if season == 0 or ind.antler_previous is None:
        return ind
    left, right, size = ind.antler_previous
    return dataclasses.replace(ind, antler_left=left, antler_right=right, antler_size=size)


def previous_configuration(rng: np.random.Generator, left: int, right: int, size: float) -> tuple[int, int, float]:
    """A buck's configuration one season earlier: usually a point or two fewer per side, sometimes
    the same (each side drawn on its own), and smaller antlers."""
    prev = [int(np.clip(n - rng.choice([0, 1, 1, 2]), 2, 6)) for n in (left, right)]
    return prev[0], prev[1], size - 0.025 * (max(left, right) - max(prev))
