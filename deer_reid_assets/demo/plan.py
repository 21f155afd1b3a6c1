"""The photo plan (which deer, where, when) and which detections a human reviewed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from .common import (
    _SEASON_DAYS,
    _SEASON_START,
    _STREAM_PLAN,
    _STREAM_REVIEW,
    _STREAM_SEASONS,
    _UNKNOWN_DOE_PROBABILITY,
)
from .individuals import _Individual

if TYPE_CHECKING:
    from .synthetic import SyntheticConfig


# --------------------------------------------------------------------------------------------
# Photo plan: which deer, where, when; and which detections a human reviewed


@dataclass(frozen=True)
class _Photo:
    camera: int
    number: int  # 1-based, chronological within the camera
    timestamp: datetime
    night: bool
    deer: tuple[int, ...]  # indices into the individuals, distinct
    season: int = 0  # antler seasons before the latest (1: a year earlier; SyntheticConfig.n_seasons = 2)


def _plan_photos(config: SyntheticConfig, individuals: list[_Individual]) -> list[_Photo]:
    """Decide each photo's camera, time, lighting and deer; every individual appears about equally."""
    rng = np.random.default_rng([config.seed, _STREAM_PLAN])
    n, n_ind = config.n_images, len(individuals)
    n_empty = n if n_ind == 0 else min(n, round(n * config.empty_fraction))
    n_multi = min(n - n_empty, round(n * config.multi_deer_fraction)) if n_ind >= 2 else 0
    sizes = np.ones(n, dtype=int)
    sizes[:n_empty] = 0
    sizes[n_empty : n_empty + n_multi] = rng.integers(2, min(3, n_ind) + 1, size=n_multi)
    sizes = rng.permutation(sizes)
    night = np.zeros(n, dtype=bool)
    night[rng.choice(n, size=round(n * config.night_fraction), replace=False)] = True

    counts = np.zeros(n_ind, dtype=int)
    drafts = []
    for i in range(n):
        if sizes[i]:
            least_seen = np.lexsort((rng.random(n_ind), counts))  # ties broken at random
            deer = tuple(int(d) for d in least_seen[: sizes[i]])
            counts[list(deer)] += 1
            camera = int(rng.choice(config.n_cameras, p=individuals[deer[0]].home_range))
        else:
            deer = ()
            camera = int(rng.integers(config.n_cameras))
        if night[i]:
            minute = 18 * 60 + 30 + int(rng.integers(12 * 60))  # 18:30 to 06:29 next morning
        else:
            minute = 7 * 60 + int(rng.integers(10 * 60 + 30))  # 07:00 to 17:29
        timestamp = _SEASON_START + timedelta(
            days=int(rng.integers(_SEASON_DAYS)), minutes=minute, seconds=int(rng.integers(60))
        )
        drafts.append((camera, timestamp, i, bool(night[i]), deer))

    if config.n_seasons == 2:  # about half the photos a year earlier: the antler season before
        earlier = np.random.default_rng([config.seed, _STREAM_SEASONS, 1]).random(n) < 0.5
        drafts = [(c, ts - timedelta(days=365) if earlier[i] else ts, i, nt, d) for c, ts, i, nt, d in drafts]
    photos = []
    numbers = [0] * config.n_cameras
    latest = max((ts.year for _, ts, _, _, _ in drafts), default=0)
    for camera, timestamp, _, is_night, deer in sorted(drafts):
        numbers[camera] += 1
        photos.append(_Photo(camera, numbers[camera], timestamp, is_night, deer, season=latest - timestamp.year))
    return photos


def _plan_review(
    config: SyntheticConfig, individuals: list[_Individual], photos: list[_Photo]
) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """Pick the (photo, individual) sightings a human labelled, and the does the detector called unknown."""
    rng = np.random.default_rng([config.seed, _STREAM_REVIEW])
    sightings: dict[int, list[tuple[int, int]]] = {i: [] for i in range(len(individuals))}
    for p, photo in enumerate(photos):
        for d in photo.deer:
            sightings[d].append((p, d))
    labelled: set[tuple[int, int]] = set()
    unknown: set[tuple[int, int]] = set()
    for d, seen in sightings.items():
        if individuals[d].profiled and seen and config.labelled_fraction > 0:
            n_label = max(1, round(config.labelled_fraction * len(seen)))
            labelled.update(seen[j] for j in rng.choice(len(seen), size=n_label, replace=False))
        if individuals[d].sex == "doe":
            unknown.update(s for s in seen if rng.random() < _UNKNOWN_DOE_PROBABILITY)
    return labelled, unknown
