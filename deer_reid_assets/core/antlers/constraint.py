"""The season-aware hard constraint of matching.

Two buck observations in the same antler season, both in hard antler and both confidently counted,
whose total points differ by more than ``tolerance`` cannot be the same deer. Across seasons (the
antlers were cast and regrown), in velvet / shed / unknown season, for does and fawns, or when
either count is not confident, the constraint says nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from deer_reid_assets.core.antlers.features import AntlerFeatures
from deer_reid_assets.core.antlers.seasons import AntlerSeason


@dataclass(frozen=True)
class AntlerObservation:
    """What is known of one detection's (or one profile's per-season) antlers."""

    classification: str  # buck / doe / fawn / unknown
    season: AntlerSeason
    total_points: int | None
    confident: bool

    @classmethod
    def of(cls, classification: str, season: AntlerSeason, features: AntlerFeatures | None) -> AntlerObservation:
        if features is None:
            return cls(classification, season, None, False)
        return cls(classification, season, features.total_points, features.confident)

    @property
    def usable(self) -> bool:
        return (self.classification == "buck" and self.season.comparable and self.confident
                and self.total_points is not None)


def conflict(a: AntlerObservation, b: AntlerObservation, tolerance: int = 0) -> str | None:
    """A one-line reason when ``a`` and ``b`` cannot be the same buck; None when no constraint applies."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if not (a.usable and b.usable) or a.season.label != b.season.label:
        return None
    if abs(a.total_points - b.total_points) > tolerance:
        return (f"{a.total_points} vs {b.total_points} points in hard antler, season {a.season.label} "
                f"(tolerance {tolerance})")
    return None


@dataclass(frozen=True)
class SeasonProfile:
    """A buck's antlers in one season, from his labelled detections."""

    season: AntlerSeason
    total_points: int | None  # the most frequent confident count (ties: the larger), None if none
    description: str | None
    n_detections: int
    n_confident: int

    def observation(self) -> AntlerObservation:
        return AntlerObservation("buck", self.season, self.total_points, self.total_points is not None)


def season_profiles(observations: list[tuple[AntlerSeason, AntlerFeatures]]) -> dict[str, SeasonProfile]:
    """``{season label: SeasonProfile}`` from one buck's (season, features) pairs; only hard-antler
    photos of a known season count (velvet and shed sets are not final)."""
    groups: dict[str, list[tuple[AntlerSeason, AntlerFeatures]]] = {}
    for season, feats in observations:
        if season.comparable:
            groups.setdefault(season.label, []).append((season, feats))
    out = {}
    for label, items in sorted(groups.items()):
        confident = [f for _, f in items if f.confident]
        votes: dict[int, int] = {}
        for f in confident:
            votes[f.total_points] = votes.get(f.total_points, 0) + 1
        total = max(votes, key=lambda n: (votes[n], n)) if votes else None
        described = next((f.description() for f in confident if f.total_points == total), None)
        out[label] = SeasonProfile(items[0][0], total, described, len(items), len(confident))
    return out
