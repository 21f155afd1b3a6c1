"""The synthetic generator's antler keypoint ground truth, and bucks across two antler seasons."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from deer_reid_assets.core.antlers import features, layout
from deer_reid_assets.core.antlers.seasons import antler_season
from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset, load_ground_truth

SMALL = SyntheticConfig(n_bucks=6, n_does=3, n_images=40)


def _load(root: Path) -> tuple[dict, dict]:
    return json.loads((root / "detections.json").read_text()), load_ground_truth(root / "ground_truth.json")


@pytest.fixture(scope="module")
def one_season(tmp_path_factory) -> tuple[dict, dict]:
    return _load(generate_dataset(tmp_path_factory.mktemp("one"), SMALL).root)


@pytest.fixture(scope="module")
def two_seasons(tmp_path_factory) -> tuple[dict, dict]:
    config = SyntheticConfig(n_bucks=6, n_does=3, n_images=60, n_seasons=2)
    return _load(generate_dataset(tmp_path_factory.mktemp("two"), config).root)


def _points(rows: list) -> list[layout.Point]:
    return [layout.Point(i, x, y, v) for i, (x, y, v) in enumerate(rows) if v > 0]


def test_every_buck_has_16_points_on_his_antlers_and_does_none(one_season):
    detections, truth = one_season
    boxes = {d["key"]: d["bbox"] for image in detections["images"] for d in image["detections"]}
    bucks = 0
    for key, gt in truth["detections"].items():
        if gt["sex"] != "buck":
            assert "antler_keypoints" not in gt
            continue
        bucks += 1
        rows = gt["antler_keypoints"]
        assert len(rows) == 16 and all(len(r) == 3 and r[2] in (0, 1, 2) for r in rows)
        for side in ("left", "right"):
            existing = [r for i, r in enumerate(rows) if layout.side_of(i) == side and r[2] > 0]
            assert len(existing) <= gt[f"antler_points_{side}"] + 1  # the beam's base and tip, n - 1 tines
        box = boxes[key]  # the antlers are part of the deer the detector boxed (a loose or tight box)
        slack = 0.08 * max(box["width"], box["height"])
        for x, y, v in rows:
            if v:
                assert box["x"] - slack <= x <= box["x"] + box["width"] + slack
                assert box["y"] - slack <= y <= box["y"] + box["height"] + slack
    assert bucks > 10


def test_counts_from_the_true_keypoints_are_the_true_counts_when_the_points_are_in_view(one_season):
    _, truth = one_season
    visibilities, exact, n = set(), 0, 0
    for gt in truth["detections"].values():
        if gt["sex"] != "buck":
            continue
        f = features.compute(_points(gt["antler_keypoints"]))
        visibilities |= {r[2] for r in gt["antler_keypoints"]}
        n += 1
        exact += (f.left_points, f.right_points) == (gt["antler_points_left"], gt["antler_points_right"])
    assert exact == n  # every drawn point is in the frame (visible or occluded) in these photos
    assert {1, 2} <= visibilities  # some points are occluded: the far antler behind the head, bushes


def test_the_far_side_is_partly_hidden_behind_the_head(one_season):
    _, truth = one_season
    near_hidden = far_hidden = 0
    for gt in truth["detections"].values():
        if gt["sex"] != "buck" or gt["occluded"] > 0:
            continue
        near = "left" if gt["pose"] == "right" else "right"  # facing right, the camera sees his left side
        for i, (_, _, v) in enumerate(gt["antler_keypoints"]):
            if v == 1:
                if layout.side_of(i) == near:
                    near_hidden += 1
                else:
                    far_hidden += 1
    assert far_hidden > 0 and near_hidden == 0


def test_two_antler_seasons_a_buck_may_carry_another_configuration(two_seasons):
    detections, truth = two_seasons
    taken = {d["key"]: image["timestamp"] for image in detections["images"] for d in image["detections"]}
    from datetime import datetime

    seasons = {antler_season(datetime.fromisoformat(taken[k])).label for k in truth["detections"]}
    assert seasons == {"2025-26", "2026-27"}
    previous = {ind["name"]: ind["antler_points_previous_season"] for ind in truth["individuals"] if ind["sex"] == "buck"}
    latest = {ind["name"]: (ind["antler_points_left"], ind["antler_points_right"])
              for ind in truth["individuals"] if ind["sex"] == "buck"}
    assert any((p["left"], p["right"]) != latest[name] for name, p in previous.items())
    seen = defaultdict(set)
    for key, gt in truth["detections"].items():
        assert gt["antler_season"] == antler_season(datetime.fromisoformat(taken[key])).label
        if gt["sex"] != "buck":
            continue
        counts = (gt["antler_points_left"], gt["antler_points_right"])
        expected = latest[gt["deer"]] if gt["antler_season"] == "2026-27" else (
            previous[gt["deer"]]["left"], previous[gt["deer"]]["right"])
        assert counts == expected
        f = features.compute(_points(gt["antler_keypoints"]))
        assert (f.left_points, f.right_points) == counts
        seen[gt["deer"]].add(gt["antler_season"])
    assert any(len(s) == 2 for s in seen.values())


def test_one_season_is_the_default_and_a_third_is_refused(one_season, tmp_path):
    _, truth = one_season
    assert {gt["antler_season"] for gt in truth["detections"].values()} == {"2026-27"}
    assert all("antler_points_previous_season" not in ind for ind in truth["individuals"])
    with pytest.raises(ValueError, match="n_seasons must be 1 or 2"):
        generate_dataset(tmp_path, SyntheticConfig(n_seasons=3))
