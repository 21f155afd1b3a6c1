"""Antler features per buck detection from the stored keypoints, per-season profiles of each deer,
and the matcher's view of them.

* ``detection_features``: every detection with stored keypoints whose class is a buck (any age
  class; a person's correction wins): its features and the antler season of its photo.
* ``deer_profiles``: per deer, from the detections a person labelled, the count per antler season
  (``constraint.season_profiles``). ``write_deer_columns`` puts the newest season with a confident
  count on ``deer.antler_points`` / ``antler_description`` and every season in ``physical_features``
  (``{"antlers": {"2025-26": {...}}}``), as the existing system's columns (seed migration 014) expect.
* ``AntlerConstraint.veto(detection, deer)``: the season-aware hard constraint for ``deer_assignments``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sqlalchemy as sa

from deer_reid_assets.core import classes
from deer_reid_assets.core.antlers import constraint, features, seasons
from deer_reid_assets.core.store import antler_annotations as q
from deer_reid_assets.core.store import antler_keypoints as kp_store


@dataclass(frozen=True)
class DetectionAntlers:
    detection_id: str
    deer_id: str | None
    reviewed: bool
    season: seasons.AntlerSeason
    features: features.AntlerFeatures

    def observation(self) -> constraint.AntlerObservation:
        return constraint.AntlerObservation.of("buck", self.season, self.features)


def detection_features(conn: sa.Connection, *, min_confidence: float = features.DEFAULT_MIN_CONFIDENCE
                       ) -> list[DetectionAntlers]:
    rows = [r for r in q.keypointed_detections(conn) if classes.sex_of(r["classification"]) == "buck"]
    points = kp_store.read(conn, [r["detection_id"] for r in rows]) if rows else {}
    out = []
    for r in rows:
        pts = points.get(r["detection_id"], [])
        out.append(DetectionAntlers(r["detection_id"], r["deer_id"], bool(r["is_reviewed"]),
                                    seasons.antler_season(r["taken"]), features.compute(pts, min_confidence=min_confidence)))
    return out


def deer_profiles(dets: list[DetectionAntlers]) -> dict[str, dict[str, constraint.SeasonProfile]]:
    """deer id -> {season: profile} from the labelled (reviewed) detections."""
    grouped: dict[str, list] = {}
    for d in dets:
        if d.reviewed and d.deer_id:
            grouped.setdefault(d.deer_id, []).append((d.season, d.features))
    return {deer: constraint.season_profiles(obs) for deer, obs in grouped.items()}


def deer_columns(profiles: dict[str, dict[str, constraint.SeasonProfile]]) -> list[dict]:
    rows = []
    for deer_id, by_season in sorted(profiles.items()):
        counted = [p for p in by_season.values() if p.total_points is not None]
        latest = max(counted, key=lambda p: p.season.label) if counted else None
        rows.append({
            "deer_id": deer_id,
            "antler_points": latest.total_points if latest else None,
            "antler_description": f"{latest.description} (season {latest.season.label})" if latest else None,
            "physical_features": {"antlers": {
                label: {"total_points": p.total_points, "description": p.description,
                        "detections": p.n_detections, "confident_detections": p.n_confident}
                for label, p in sorted(by_season.items())}},
        })
    return rows


def write_deer_columns(engine: sa.Engine, *, min_confidence: float = features.DEFAULT_MIN_CONFIDENCE) -> dict:
    """Compute features and profiles and write the deer table's antler columns; a summary."""
    with engine.begin() as conn:
        dets = detection_features(conn, min_confidence=min_confidence)
        profiles = deer_profiles(dets)
        rows = deer_columns(profiles)
        q.write_deer_antlers(conn, rows)
    return {"buck_detections": len(dets), "confident": sum(d.features.confident for d in dets),
            "deer_profiles": len(rows), "deer_with_points": sum(r["antler_points"] is not None for r in rows),
            "rows": rows, "detections": dets}


@dataclass
class AntlerConstraint:
    """The season-aware hard constraint, loaded once per matching run."""

    tolerance: int = 0
    min_confidence: float = features.DEFAULT_MIN_CONFIDENCE
    observations: dict[str, constraint.AntlerObservation] = field(default_factory=dict)
    profiles: dict[str, dict[str, constraint.SeasonProfile]] = field(default_factory=dict)

    @classmethod
    def load(cls, conn: sa.Connection, *, tolerance: int = 0,
             min_confidence: float = features.DEFAULT_MIN_CONFIDENCE) -> AntlerConstraint:
        if tolerance < 0:
            raise ValueError(f"antler tolerance must be >= 0, got {tolerance}")
        dets = detection_features(conn, min_confidence=min_confidence)
        return cls(tolerance, min_confidence, {d.detection_id: d.observation() for d in dets}, deer_profiles(dets))

    def veto(self, detection_id: str, deer_id: str) -> str | None:
        obs = self.observations.get(detection_id)
        if obs is None:
            return None
        profile = self.profiles.get(deer_id, {}).get(obs.season.label)
        if profile is None:
            return None
        return constraint.conflict(obs, profile.observation(), self.tolerance)

    def filter(self, detection_id: str, ranked: list, threshold: float, changes: list[dict]) -> list:
        """``ranked`` candidates (with ``deer_id`` and ``similarity``) less those the constraint rules
        out; when it rules out the best one and that one was above ``threshold`` (a changed decision),
        appends what and why to ``changes``."""
        if not ranked:
            return ranked
        vetoes = {c.deer_id: self.veto(detection_id, c.deer_id) for c in ranked}
        if vetoes[ranked[0].deer_id] is not None and ranked[0].similarity >= threshold:
            changes.append({"detection_id": detection_id, "skipped_deer_id": ranked[0].deer_id,
                            "reason": vetoes[ranked[0].deer_id]})
        return [c for c in ranked if vetoes[c.deer_id] is None]


def evaluation_veto(conn: sa.Connection, *, tolerance: int = 0,
                    min_confidence: float = features.DEFAULT_MIN_CONFIDENCE):
    """The constraint for the held-out protocol (``report.evaluate``'s ``veto``): each identity's
    per-season profile from its *gallery* detections' keypoints, each query's observation from its
    own; returns the function, which also counts in ``.stats`` the pairs it ruled out."""
    if tolerance < 0:
        raise ValueError(f"antler tolerance must be >= 0, got {tolerance}")
    dets = {d.detection_id: d for d in detection_features(conn, min_confidence=min_confidence)}

    def veto(query_ids: list[str], names: list[str], gallery_ids: list[str], gallery_names: list[str]):
        grouped: dict[str, list] = {}
        for det, name in zip(gallery_ids, gallery_names):
            if det in dets:
                grouped.setdefault(name, []).append((dets[det].season, dets[det].features))
        profiles = {name: constraint.season_profiles(obs) for name, obs in grouped.items()}
        out = np.zeros((len(query_ids), len(names)), dtype=bool)
        for qi, det in enumerate(query_ids):
            if det not in dets:
                continue
            obs = dets[det].observation()
            veto.stats["queries_with_usable_count"] += obs.usable
            for p, name in enumerate(names):
                season = profiles.get(name, {}).get(obs.season.label)
                out[qi, p] = season is not None and constraint.conflict(obs, season.observation(), tolerance) is not None
        veto.stats["pairs_ruled_out"] += int(out.sum())
        return out

    veto.stats = {"queries_with_usable_count": 0, "pairs_ruled_out": 0, "tolerance": tolerance}
    return veto
