"""core/antlers: the layout, features from known keypoints, seasons and the constraint (no database)."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from deer_reid_assets.core.antlers import constraint, features, layout, seasons
from deer_reid_assets.core.antlers.layout import Point


def test_layout_matches_the_existing_system_and_flips_left_right():
    assert layout.KEYPOINT_NAMES[0] == "left_main_beam" and layout.KEYPOINT_NAMES[7] == "left_royal_tine"
    assert layout.KEYPOINT_NAMES[8] == "right_main_beam" and layout.KEYPOINT_NAMES[15] == "right_royal_tine"
    assert layout.FLIP_IDX == (8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7)
    for i, j in enumerate(layout.FLIP_IDX):
        assert layout.part_of(i) == layout.part_of(j) and layout.side_of(i) != layout.side_of(j)
    with pytest.raises(ValueError, match="given twice"):
        layout.by_index([Point(3, 0, 0), Point(3, 1, 1)])


def _side(side: str, parts: dict[str, tuple[float, float]], *, visibility=2, confidence=0.9) -> list[Point]:
    return [Point(layout.index(side, p), x, y, visibility, confidence) for p, (x, y) in parts.items()]


def eight_pointer(dx: float = 0.0) -> list[Point]:
    """Beam bases 20 px apart; tips 60 px apart; brow, G2, G3 each side."""
    left = {"main_beam": (100, 100), "brow_tine": (95, 90), "g2": (85, 70), "g3": (80, 60), "tip": (70, 50)}
    right = {"main_beam": (120, 100), "brow_tine": (125, 90), "g2": (135, 70), "g3": (140, 60), "tip": (130, 50)}
    return _side("left", {k: (x + dx, y) for k, (x, y) in left.items()}) + _side("right", right)


def test_features_of_a_typical_eight_pointer():
    f = features.compute(eight_pointer())
    assert (f.left_points, f.right_points, f.total_points) == (4, 4, 8)
    assert f.confident and f.typical is True
    # widest same-part pair: G3 at x 80 / 140 -> 60 px; head = beam bases 20 px apart
    assert f.spread_ratio == pytest.approx(3.0)
    assert f.description() == "8-point typical (4L/4R), inside spread 3.0x head"
    assert f.as_dict()["total_points"] == 8
    assert features.compute(eight_pointer(), head_size=30.0).spread_ratio == pytest.approx(2.0)


def test_low_confidence_and_invisible_tines_do_not_count():
    pts = eight_pointer()
    g2 = layout.index("left", "g2")
    brow = layout.index("right", "brow_tine")
    pts = [Point(p.index, p.x, p.y, p.visibility, 0.2) if p.index == g2 else
           Point(p.index, p.x, p.y, 0, p.confidence) if p.index == brow else p for p in pts]
    f = features.compute(pts)
    assert (f.left_points, f.right_points) == (3, 3)
    assert features.compute(pts, min_confidence=0.1).left_points == 4
    occluded = [Point(p.index, p.x, p.y, 1, p.confidence) for p in eight_pointer()]
    assert features.compute(occluded).total_points == 8  # occluded (1) but annotated still counts


def test_a_side_without_its_tip_is_not_confident_and_extra_tines_are_non_typical():
    tip = layout.index("right", "tip")
    f = features.compute([p for p in eight_pointer() if p.index != tip])
    assert f.right_points == 4 and not f.right_confident and not f.confident and f.typical is None
    assert "at least 8 points" in f.description() and "4+R" in f.description()
    extra = eight_pointer() + _side("left", {"bez_tine": (90, 80)})
    g = features.compute(extra)
    assert g.total_points == 9 and g.typical is False and "non-typical" in g.description()
    assert features.compute([]).description() == "no antlers seen"


def test_antler_seasons_by_month():
    assert seasons.antler_season(datetime(2025, 10, 3)) == seasons.AntlerSeason("2025-26", "hard")
    assert seasons.antler_season(date(2026, 1, 20)) == seasons.AntlerSeason("2025-26", "hard")
    assert seasons.antler_season(date(2026, 3, 1)) == seasons.AntlerSeason("2025-26", "shed")
    assert seasons.antler_season(date(2026, 6, 1)) == seasons.AntlerSeason("2026-27", "velvet")
    assert seasons.antler_season(date(2026, 9, 1)) == seasons.AntlerSeason("2026-27", "hard")
    assert seasons.antler_season(None) == seasons.AntlerSeason("unknown", "unknown")
    assert not seasons.antler_season(None).comparable
    with pytest.raises(ValueError, match="exactly once"):
        seasons.SeasonCalendar(hard_months=(9, 10))


def _obs(cls="buck", when=date(2025, 11, 1), points=8, confident=True):
    return constraint.AntlerObservation(cls, seasons.antler_season(when), points, confident)


def test_constraint_only_within_one_hard_antler_season_and_only_when_both_are_confident():
    eight, ten = _obs(points=8), _obs(points=10)
    assert "8 vs 10 points" in constraint.conflict(eight, ten)
    assert constraint.conflict(eight, _obs(points=8)) is None
    assert constraint.conflict(eight, ten, tolerance=2) is None
    assert constraint.conflict(eight, ten, tolerance=1) is not None
    assert constraint.conflict(eight, _obs(points=10, when=date(2026, 11, 1))) is None  # next season: regrown
    assert constraint.conflict(eight, _obs(points=10, when=date(2026, 1, 5))) is not None  # same season, January
    assert constraint.conflict(eight, _obs(points=10, when=date(2026, 7, 1))) is None  # velvet
    assert constraint.conflict(eight, _obs(points=10, when=date(2026, 3, 1))) is None  # shedding
    assert constraint.conflict(eight, _obs(points=10, when=None)) is None
    assert constraint.conflict(eight, _obs(points=10, confident=False)) is None
    assert constraint.conflict(eight, _obs(cls="doe", points=0)) is None
    with pytest.raises(ValueError):
        constraint.conflict(eight, ten, tolerance=-1)


def test_season_profiles_vote_over_confident_hard_antler_photos():
    eight = features.compute(eight_pointer())
    tip = layout.index("right", "tip")
    partial = features.compute([p for p in eight_pointer() if p.index != tip])
    ten = features.compute(eight_pointer() + _side("left", {"g4": (75, 55)}) + _side("right", {"g4": (137, 55)}))
    assert ten.total_points == 10
    hard25, hard26, velvet = (seasons.antler_season(d) for d in (date(2025, 11, 1), date(2026, 10, 1),
                                                                  date(2026, 6, 1)))
    profiles = constraint.season_profiles([(hard25, eight), (hard25, eight), (hard25, partial), (hard25, ten),
                                           (hard26, ten), (velvet, eight)])
    assert set(profiles) == {"2025-26", "2026-27"}
    assert profiles["2025-26"].total_points == 8 and profiles["2025-26"].n_confident == 3
    assert profiles["2025-26"].n_detections == 4
    assert profiles["2026-27"].total_points == 10 and profiles["2026-27"].description.startswith("10-point")
    only_partial = constraint.season_profiles([(hard25, partial)])["2025-26"]
    assert only_partial.total_points is None and not only_partial.observation().usable


def test_layout_agrees_with_the_antler_keypoints_table_helpers():
    from deer_reid_assets.core.store import antler_keypoints

    assert tuple(antler_keypoints.KEYPOINT_NAMES) == layout.KEYPOINT_NAMES
