"""The synthetic individuals and their stable identity cues."""

from __future__ import annotations

import colorsys
import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .antler_truth import previous_configuration
from .common import _STREAM_INDIVIDUALS, _STREAM_SEASONS, Rgb, _grey, _lighten, _rgb

if TYPE_CHECKING:
    from .synthetic import SyntheticConfig


# --------------------------------------------------------------------------------------------
# Individuals


@dataclass(frozen=True)
class FlankMark:
    """A scar, pale patch or spot cluster on one flank (a real deer's two flanks differ)."""

    kind: str  # "patch", "spots" or "scar"
    position: tuple[float, float]  # on the flank, relative to the body ellipse radii
    size: float
    angle: float
    spots: tuple[tuple[float, float], ...]
    colour: Rgb


def _flank_mark(rng: np.random.Generator, coat: Rgb) -> FlankMark:
    return FlankMark(
        kind=str(rng.choice(["patch", "spots", "scar"])),
        position=(float(rng.uniform(-0.6, 0.4)), float(rng.uniform(-0.45, 0.3))),
        size=float(rng.uniform(0.045, 0.08)),
        angle=float(rng.uniform(0, math.pi)),
        spots=tuple((float(dx), float(dy)) for dx, dy in rng.uniform(-0.07, 0.07, size=(int(rng.integers(3, 7)), 2))),
        colour=_lighten(coat, rng.uniform(0.45, 0.75)),
    )


def _ear_notch(rng: np.random.Generator) -> float | None:
    """About 40% of ears carry a notch (fights, fences, ear tags lost), at a place of their own."""
    return float(rng.uniform(0.15, 0.85)) if rng.random() < 0.4 else None


@dataclass(frozen=True)
class _Individual:
    """Stable identity cues of one deer; lengths are in body lengths unless noted."""

    name: str
    sex: str  # "buck" or "doe"
    profiled: bool
    length: float  # body length at distance scale 1, as a fraction of the image width
    body_height: float
    leg_length: float
    neck_length: float
    neck_width: float
    neck_angle: float  # radians above horizontal
    head_length: float
    head_angle: float  # radians below horizontal
    coat: Rgb
    belly: Rgb
    throat_size: float
    throat: Rgb
    marks: tuple[FlankMark, FlankMark]  # the deer's own left flank, right flank: two different sides
    ear_notches: tuple[float | None, float | None]  # left ear, right ear: where a notch is cut (0..1), or None
    antler_left: int  # points (tines + beam tip) on the deer's own left side; 0 for does
    antler_right: int
    antler_size: float
    tine_length: float
    tine_factors: tuple[float, ...]
    antler: Rgb
    home_range: tuple[float, ...]  # probability of showing up at each camera
    antler_previous: tuple[int, int, float] | None = None  # left, right, size one antler season earlier


def _make_individuals(config: SyntheticConfig) -> list[_Individual]:
    rng = np.random.default_rng([config.seed, _STREAM_INDIVIDUALS])
    n = config.n_bucks + config.n_does
    unprofiled = set(rng.choice(n, size=round(config.unprofiled_fraction * n), replace=False).tolist())
    individuals = []
    for index in range(n):
        buck = index < config.n_bucks
        name = f"Buck-{index + 1:02d}" if buck else f"Doe-{index - config.n_bucks + 1:02d}"
        hue = rng.uniform(20, 34) / 360
        coat_hsv = (hue, rng.uniform(0.28, 0.55), rng.uniform(0.42, 0.64))
        coat = _rgb(colorsys.hsv_to_rgb(*coat_hsv))
        if buck:
            left = int(rng.integers(2, 7))
            right = int(np.clip(left + rng.choice([-1, 0, 0, 1]), 2, 6))
        else:
            left = right = 0
        individuals.append(
            _Individual(
                name=name,
                sex="buck" if buck else "doe",
                profiled=index not in unprofiled,
                length=rng.uniform(0.24, 0.29) if buck else rng.uniform(0.21, 0.25),
                body_height=rng.uniform(0.38, 0.46) if buck else rng.uniform(0.34, 0.41),
                leg_length=rng.uniform(0.42, 0.56),
                neck_length=rng.uniform(0.36, 0.48),
                neck_width=rng.uniform(0.17, 0.22) if buck else rng.uniform(0.12, 0.16),
                neck_angle=math.radians(rng.uniform(50, 68)),
                head_length=rng.uniform(0.26, 0.32),
                head_angle=math.radians(rng.uniform(28, 45)),
                coat=coat,
                belly=_lighten(coat, rng.uniform(0.25, 0.55)),
                throat_size=rng.uniform(0.5, 1.4),
                throat=_grey(rng.uniform(190, 250)),
                marks=(_flank_mark(rng, coat), _flank_mark(rng, coat)),
                ear_notches=(_ear_notch(rng), _ear_notch(rng)),
                antler_left=left,
                antler_right=right,
                antler_size=0.27 + 0.025 * max(left, right) + rng.uniform(-0.02, 0.02),
                tine_length=rng.uniform(0.14, 0.2),
                tine_factors=tuple(float(f) for f in rng.uniform(0.75, 1.15, size=6)),
                antler=_grey(rng.uniform(175, 215), tint=(1.05, 1.0, 0.85)),
                home_range=tuple(float(p) for p in rng.dirichlet(np.full(config.n_cameras, 4.0))),
            )
        )
    if config.n_seasons == 2:  # a stream of its own: one season's individuals stay as they were
        seasons = np.random.default_rng([config.seed, _STREAM_SEASONS])
        individuals = [dataclasses.replace(ind, antler_previous=previous_configuration(
            seasons, ind.antler_left, ind.antler_right, ind.antler_size)) if ind.sex == "buck" else ind
            for ind in individuals]
    return individuals
