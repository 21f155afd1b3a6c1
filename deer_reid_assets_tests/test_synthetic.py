"""Tests of the synthetic trail-camera data set generator."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deer_reid_assets.demo.synthetic import (
    DETECTIONS_FORMAT,
    GROUND_TRUTH_FORMAT,
    DatasetSummary,
    SyntheticConfig,
    camera_background,
    generate_dataset,
    load_ground_truth,
)

SMALL = SyntheticConfig(n_bucks=6, n_does=3, n_images=40)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> DatasetSummary:
    return generate_dataset(tmp_path_factory.mktemp("synthetic"), SMALL)


@pytest.fixture(scope="module")
def detections(dataset: DatasetSummary) -> dict:
    return json.loads(dataset.detections_file.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def truth(dataset: DatasetSummary) -> dict:
    return load_ground_truth(dataset.ground_truth_file)


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_summary_and_layout(dataset: DatasetSummary, detections: dict, truth: dict) -> None:
    assert dataset.detections_file == dataset.root / "detections.json"
    assert dataset.ground_truth_file == dataset.root / "ground_truth.json"
    assert detections["format"] == DETECTIONS_FORMAT
    assert truth["format"] == GROUND_TRUTH_FORMAT
    assert truth["seed"] == SMALL.seed
    assert dataset.n_images == len(detections["images"]) == SMALL.n_images
    assert dataset.n_detections == len(truth["detections"])
    assert dataset.n_individuals == len(truth["individuals"]) == SMALL.n_bucks + SMALL.n_does
    labelled = [d for image in detections["images"] for d in image["detections"] if "label" in d]
    assert dataset.n_labelled == len(labelled) > 0
    assert [c["name"] for c in detections["cameras"]] == ["cam01", "cam02", "cam03"]
    for image in detections["images"]:
        camera = image["camera"]
        assert image["file"].startswith(f"images/{camera}/{camera}_") and image["file"].endswith(".jpg")


def test_same_config_gives_identical_files(tmp_path: Path, dataset: DatasetSummary) -> None:
    again = generate_dataset(tmp_path / "again", SMALL)
    first, second = _all_files(dataset.root), _all_files(again.root)
    assert first.keys() == second.keys()
    assert len(first) == SMALL.n_images + 4  # + detections.json, ground_truth.json, the antler annotations, marks
    for name, content in first.items():
        assert content == second[name], name


def test_rendering_in_worker_processes_gives_the_same_files(tmp_path: Path, dataset: DatasetSummary,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from deer_reid_assets.demo import synthetic

    monkeypatch.setattr(synthetic, "PARALLEL_FROM", 2)  # the 40 photos go through the process pool
    monkeypatch.setattr(synthetic.os, "cpu_count", lambda: 2)
    parallel = generate_dataset(tmp_path / "parallel", SMALL)
    assert _all_files(parallel.root) == _all_files(dataset.root)


def test_different_seed_gives_different_images(tmp_path: Path, dataset: DatasetSummary) -> None:
    other = generate_dataset(tmp_path / "other", SyntheticConfig(n_bucks=6, n_does=3, n_images=40, seed=8))
    first, second = _all_files(dataset.root), _all_files(other.root)
    images = [name for name in first if name.endswith(".jpg") and name in second]
    assert images
    assert all(first[name] != second[name] for name in images)


def test_ground_truth_matches_detections(detections: dict, truth: dict) -> None:
    individuals = {ind["name"]: ind for ind in truth["individuals"]}
    keys = []
    for image in detections["images"]:
        for k, detection in enumerate(image["detections"]):
            assert detection["key"] == f"{image['file']}#{k}"
            keys.append(detection["key"])
            gt = truth["detections"][detection["key"]]
            assert gt["deer"] in individuals
            assert gt["sex"] == individuals[gt["deer"]]["sex"]
            assert gt["pose"] in ("left", "right")
            assert 0.0 <= gt["occluded"] <= 1.0
            assert 0.0 < detection["confidence"] <= 1.0
            if "label" in detection:
                assert detection["label"] == gt["deer"]
                assert individuals[gt["deer"]]["profiled"]
            assert detection["classification"] in (gt["sex"], "unknown")
            if detection["classification"] == "unknown":
                assert gt["sex"] == "doe"
    assert len(keys) == len(set(keys))
    assert set(keys) == set(truth["detections"])


def test_antler_points(truth: dict) -> None:
    for record in [*truth["individuals"], *truth["detections"].values()]:
        total = record["antler_points_left"] + record["antler_points_right"]
        assert record["antler_points"] == total
        if record["sex"] == "buck":
            assert 2 <= record["antler_points_left"] <= 6 and 2 <= record["antler_points_right"] <= 6
        else:
            assert total == 0


def test_individuals_profiles_and_sightings(detections: dict, truth: dict) -> None:
    names = [ind["name"] for ind in truth["individuals"]]
    assert names == [f"Buck-{i:02d}" for i in range(1, 7)] + [f"Doe-{i:02d}" for i in range(1, 4)]
    unprofiled = {ind["name"] for ind in truth["individuals"] if not ind["profiled"]}
    assert len(unprofiled) == round(SMALL.unprofiled_fraction * len(names))
    sightings = Counter(gt["deer"] for gt in truth["detections"].values())
    assert set(sightings) == set(names)
    assert min(sightings.values()) >= 4
    labelled = Counter(
        truth["detections"][d["key"]]["deer"]
        for image in detections["images"]
        for d in image["detections"]
        if "label" in d
    )
    assert set(labelled) == set(names) - unprofiled  # every profiled animal has labelled photos


def test_images_decode_and_boxes_fit(dataset: DatasetSummary, detections: dict, truth: dict) -> None:
    for image in detections["images"]:
        with Image.open(dataset.root / image["file"]) as photo:
            assert photo.format == "JPEG"
            assert photo.size == (SMALL.image_width, SMALL.image_height)
            photo.load()
        for detection in image["detections"]:
            box = detection["bbox"]
            assert box["width"] > 0 and box["height"] > 0
            assert box["x"] >= 0 and box["y"] >= 0
            assert box["x"] + box["width"] <= SMALL.image_width + 1e-6
            assert box["y"] + box["height"] <= SMALL.image_height + 1e-6


def test_empty_multi_deer_and_night_photos_exist(detections: dict, truth: dict) -> None:
    counts = Counter(len(image["detections"]) for image in detections["images"])
    assert counts[0] == round(SMALL.empty_fraction * SMALL.n_images)
    multi = sum(n for size, n in counts.items() if size >= 2)
    assert multi == round(SMALL.multi_deer_fraction * SMALL.n_images)
    assert max(counts) <= 3
    for image in detections["images"]:  # deer in one photo are distinct individuals
        deer = [truth["detections"][d["key"]]["deer"] for d in image["detections"]]
        assert len(deer) == len(set(deer))
    night = {gt["night"] for gt in truth["detections"].values()}
    assert night == {True, False}


def test_timestamps_in_season_and_night_at_night(detections: dict, truth: dict) -> None:
    from datetime import datetime

    for image in detections["images"]:
        stamp = datetime.fromisoformat(image["timestamp"])
        assert stamp.tzinfo is not None
        assert datetime(2026, 9, 30, tzinfo=stamp.tzinfo) < stamp < datetime(2026, 12, 2, tzinfo=stamp.tzinfo)
        for detection in image["detections"]:
            is_night = truth["detections"][detection["key"]]["night"]
            assert (stamp.hour >= 18 or stamp.hour < 7) == is_night


def test_night_photos_are_greyscale(dataset: DatasetSummary, detections: dict, truth: dict) -> None:
    for image in detections["images"]:
        if not image["detections"]:
            continue
        night = truth["detections"][image["detections"][0]["key"]]["night"]
        pixels = np.asarray(Image.open(dataset.root / image["file"]).convert("RGB"), dtype=np.int16)
        colour_spread = np.abs(pixels[..., 0] - pixels[..., 2]).mean()
        assert (colour_spread < 3) == night, image["file"]


def _pool(pixels: np.ndarray, cell: int) -> np.ndarray:
    """Average over cell x cell blocks, which washes out sensor noise and blur."""
    h, w = pixels.shape[0] // cell * cell, pixels.shape[1] // cell * cell
    return pixels[:h, :w].reshape(h // cell, cell, w // cell, cell, -1).mean(axis=(1, 3))


def test_deer_are_drawn_inside_their_boxes(dataset: DatasetSummary, detections: dict, truth: dict) -> None:
    """In daylight photos, the box differs from the camera's empty scene much more than the rest does."""
    cell = 8
    backgrounds = {
        camera["name"]: _pool(camera_background(SMALL, index).astype(np.float32), cell)
        for index, camera in enumerate(detections["cameras"])
    }

    def cells(box: dict) -> tuple[slice, slice]:
        x0, y0 = int(box["x"]) // cell, int(box["y"]) // cell
        x1, y1 = int(box["x"] + box["width"]) // cell + 1, int(box["y"] + box["height"]) // cell + 1
        return slice(y0, y1), slice(x0, x1)

    ratios = []
    for image in detections["images"]:
        keys = [d["key"] for d in image["detections"]]
        if not keys or truth["detections"][keys[0]]["night"]:
            continue
        pixels = np.asarray(Image.open(dataset.root / image["file"]).convert("RGB"), dtype=np.float32)
        photo = _pool(pixels, cell)
        background = backgrounds[image["camera"]]
        scene = np.ones(photo.shape[:2], dtype=bool)
        scene[-(30 // cell + 1) :] = False  # the info bar
        for detection in image["detections"]:
            scene[cells(detection["bbox"])] = False
        exposure = (photo[scene] * background[scene]).sum(axis=0) / (background[scene] ** 2).sum(axis=0)
        difference = np.abs(photo - background * exposure).mean(axis=2)
        outside = difference[scene].mean()
        for detection in image["detections"]:
            if truth["detections"][detection["key"]]["occluded"] > 0.5:
                continue
            inside = difference[cells(detection["bbox"])].mean()
            assert inside > outside + 3, (detection["key"], inside, outside)
            ratios.append(inside / outside)
    assert len(ratios) >= 10
    assert np.median(ratios) > 5


def test_invalid_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_dataset(tmp_path, SyntheticConfig(night_fraction=1.5))
    with pytest.raises(ValueError):
        generate_dataset(tmp_path, SyntheticConfig(n_cameras=0))


def test_load_ground_truth_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"format": "something-else"}), encoding="utf-8")
    with pytest.raises(ValueError):
        load_ground_truth(path)
