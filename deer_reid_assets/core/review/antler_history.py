"""A deer's antler history for its page: one row per antler season (``core.antlers.seasons``) from
the keypoints stored for the deer's detections.

A season's points come from its hard-antler photos with both sides confidently seen, the most
frequent total (ties: the larger), as the antler profiles count them; without such a photo, from the
photo with the most points, marked ``settled=False`` (velvet, shed or partly unseen: at least that).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from deer_reid_assets.core.antlers import features, seasons
from deer_reid_assets.core.store import antler_keypoints as kp_store
from deer_reid_assets.core.store import antler_review as store
from deer_reid_assets.core.store.antler_annotations import ANNOTATION_PREFIX


@dataclass(frozen=True)
class SeasonRow:
    season: str
    phases: str                 # the phases of the photos seen, e.g. "velvet, hard"
    left_points: int
    right_points: int
    total_points: int
    typical: str                # typical / non-typical / n/a (a side not confidently seen)
    description: str
    settled: bool               # from a confident hard-antler photo
    detections: int             # detections with keypoints
    by_people: int              # ... annotated by a person in the review app or an import
    by_model: int               # ... predicted by a keypoint model


def _pick(items: list[tuple[seasons.AntlerSeason, features.AntlerFeatures]]) -> tuple[features.AntlerFeatures, bool]:
    settled = [f for s, f in items if s.comparable and f.confident]
    if settled:
        votes: dict[int, int] = {}
        for f in settled:
            votes[f.total_points] = votes.get(f.total_points, 0) + 1
        total = max(votes, key=lambda n: (votes[n], n))
        return next(f for f in settled if f.total_points == total), True
    return max((f for _, f in items), key=lambda f: f.total_points), False


def deer_history(conn: sa.Connection, deer_id: str, *,
                 min_confidence: float = features.DEFAULT_MIN_CONFIDENCE) -> list[SeasonRow]:
    """The deer's seasons, newest first (a season of photos without a time last)."""
    dets = store.deer_keypointed_detections(conn, deer_id, ANNOTATION_PREFIX)
    if not dets:
        return []
    points = kp_store.read(conn, [d["detection_id"] for d in dets])
    by_season: dict[str, list] = {}
    for d in dets:
        season = seasons.antler_season(d["taken"])
        feats = features.compute(points.get(d["detection_id"], []), min_confidence=min_confidence)
        by_season.setdefault(season.label, []).append((season, feats, bool(d["annotated"])))
    rows = []
    for label, items in by_season.items():
        chosen, settled = _pick([(s, f) for s, f, _ in items])
        people = sum(a for _, _, a in items)
        phases = [p for p in (seasons.VELVET, seasons.HARD, seasons.SHED, seasons.UNKNOWN)
                  if any(s.phase == p for s, _, _ in items)]
        rows.append(SeasonRow(
            season=label, phases=", ".join(phases), left_points=chosen.left_points,
            right_points=chosen.right_points, total_points=chosen.total_points,
            typical="n/a" if chosen.typical is None else ("typical" if chosen.typical else "non-typical"),
            description=chosen.description(), settled=settled, detections=len(items), by_people=people,
            by_model=len(items) - people))
    return sorted(rows, key=lambda r: (r.season != seasons.UNKNOWN, r.season), reverse=True)
