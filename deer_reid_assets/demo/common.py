"""Constants and colour helpers shared by the synthetic-data modules."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

DETECTIONS_FORMAT = "deer-reid-detections/1"
GROUND_TRUTH_FORMAT = "deer-reid-ground-truth/1"
JPEG_QUALITY = 90

# Camera clocks run on Eastern Standard Time all season (trail cameras rarely follow DST).
_CAMERA_TZ = timezone(timedelta(hours=-5), "EST")
_SEASON_START = datetime(2026, 10, 1, tzinfo=_CAMERA_TZ)
_SEASON_DAYS = 61  # October and November: the rut.

# Independent random streams, so that e.g. changing n_images does not change the animals.
_STREAM_INDIVIDUALS = 0
_STREAM_CAMERA = 1
_STREAM_PLAN = 2
_STREAM_PHOTO = 3
_STREAM_REVIEW = 4
_STREAM_SEASONS = 5  # the earlier antler season (SyntheticConfig.n_seasons = 2)

_SUPERSAMPLE = 2  # deer are drawn at twice the size and box-filtered down (anti-aliasing)
_MIN_SCALE, _MAX_SCALE = 0.5, 1.3  # distance scale of a deer in a photo
_OCCLUSION_PROBABILITY = 0.22
_UNKNOWN_DOE_PROBABILITY = 0.05
_SITE_LATITUDE, _SITE_LONGITUDE = 44.1, -73.2
_CAMERA_PLACES = (
    "oak ridge scrape line",
    "creek crossing",
    "food plot edge",
    "hemlock bedding area",
    "old logging road",
    "abandoned apple orchard",
    "saddle between ridges",
    "cedar swamp trail",
)

Rgb = tuple[int, int, int]

# --------------------------------------------------------------------------------------------
# Small helpers


def _rgb(values: tuple[float, float, float] | np.ndarray) -> Rgb:
    """Colour from 0..1 floats."""
    r, g, b = (round(float(np.clip(v, 0, 1)) * 255) for v in values)
    return r, g, b


def _grey(level: float, tint: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Rgb:
    return _rgb(tuple(level * t / 255 for t in tint))


def _scale(colour: Rgb, factor: float) -> Rgb:
    return _rgb(tuple(c * factor / 255 for c in colour))


def _lighten(colour: Rgb, amount: float) -> Rgb:
    """Blend towards an off-white by ``amount`` in [0, 1]."""
    return _rgb(tuple((c + (v - c) * amount) / 255 for c, v in zip(colour, (236, 228, 214))))
