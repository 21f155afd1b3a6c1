"""Seeded synthetic trail-camera photos of white-tailed deer, with ground truth.

Replaces real data for the demo and the tests. Every individual carries stable identity cues, as real
deer do: body proportions, coat tone, throat patch, leg length, a different mark on each flank, ear
notches and, for bucks, an antler configuration with a known number of points per side. A photo shows
one side of the animal (its pose), so only that side's flank mark, ear and near antler are visible;
every photo also varies distance, position, occlusion, blur, exposure, sensor noise and day/night
(infrared greyscale) lighting, so re-identification is learnable but not trivial. Modules:
``individuals`` (the cues), ``scene`` (cameras), ``plan`` (photos and review), ``drawing`` (one deer),
``render`` (one photo), ``antler_truth`` (antler keypoints, seasons), ``common`` (constants, colours).

Output of :func:`generate_dataset` under ``out_dir``:

* ``images/<camera>/<camera>_<NNNNN>.jpg`` -- the photos, numbered chronologically per camera;
* ``detections.json`` -- what a detector plus a human reviewer give (format
  ``deer-reid-detections/1``); human labels only on part of the detections of profiled animals;
* ``ground_truth.json`` -- the hidden truth for evaluation (format ``deer-reid-ground-truth/1``);
  per buck detection also its antler season, points per side in that season and its 16 antler
  keypoints ``[x, y, visibility]`` in pixels (``antler_truth``);
* ``antler_annotations/label_studio_export.json`` -- a person's antler annotations of the labelled
  bucks, as Label Studio exports them (``annotations``);
* ``marks/recorded_marks.json`` -- the marks the hunter recorded for the deer he labelled (``marks``);
  every individual's true marks and body length are in ``ground_truth.json``.

The same :class:`SyntheticConfig` always gives byte-identical files: all randomness comes from
``numpy.random.Generator`` streams derived from ``config.seed``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deer_reid_assets.core.antlers.seasons import antler_season

from .annotations import write_antler_annotations
from .antler_truth import as_rows, season_view
from .common import _STREAM_PHOTO, DETECTIONS_FORMAT, GROUND_TRUTH_FORMAT, JPEG_QUALITY
from .individuals import _make_individuals
from .marks import side_seen, true_marks, write_hunter_marks
from .plan import _plan_photos, _plan_review
from .render import _render_photo
from .scene import _make_camera


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and mix of a synthetic data set; the same config always gives the same files."""

    n_bucks: int = 12
    n_does: int = 6
    n_cameras: int = 3
    n_images: int = 240  # photos in total, including empty ones
    image_width: int = 640
    image_height: int = 480
    empty_fraction: float = 0.08  # photos with no deer
    multi_deer_fraction: float = 0.12  # photos with 2-3 deer
    night_fraction: float = 0.35  # night infrared (greyscale) photos
    unprofiled_fraction: float = 0.2  # individuals with no known profile: never labelled
    labelled_fraction: float = 0.5  # of the detections of profiled individuals, share labelled
    seed: int = 7
    n_seasons: int = 1  # antler seasons the photos span (2: a year earlier too, bucks with other antlers)

    def validate(self) -> None:
        """Raise ``ValueError`` when a field is out of range."""
        counts = {
            "n_bucks": self.n_bucks,
            "n_does": self.n_does,
            "n_images": self.n_images,
        }
        for name, value in counts.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.n_cameras < 1:
            raise ValueError(f"n_cameras must be >= 1, got {self.n_cameras}")
        if self.image_width < 64 or self.image_height < 64:
            raise ValueError("image_width and image_height must be >= 64")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.n_seasons not in (1, 2):
            raise ValueError(f"n_seasons must be 1 or 2, got {self.n_seasons}")
        fractions = {
            "empty_fraction": self.empty_fraction,
            "multi_deer_fraction": self.multi_deer_fraction,
            "night_fraction": self.night_fraction,
            "unprofiled_fraction": self.unprofiled_fraction,
            "labelled_fraction": self.labelled_fraction,
        }
        for name, value in fractions.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")


@dataclass
class DatasetSummary:
    """Where a generated data set lies and how big it is."""

    root: Path
    n_images: int
    n_detections: int
    n_individuals: int  # individuals listed in the ground truth
    n_labelled: int  # detections that carry a human label
    detections_file: Path  # root / "detections.json"
    ground_truth_file: Path  # root / "ground_truth.json"


def generate_dataset(out_dir: Path, config: SyntheticConfig = SyntheticConfig()) -> DatasetSummary:
    """Write photos, ``detections.json`` and ``ground_truth.json`` under ``out_dir``.

    Existing files of the same names are overwritten; other files are left alone.
    """
    config.validate()
    root = Path(out_dir)
    individuals = _make_individuals(config)
    cameras = [_make_camera(config, index) for index in range(config.n_cameras)]
    photos = _plan_photos(config, individuals)
    labelled, unknown = _plan_review(config, individuals, photos)

    image_entries: list[dict] = []
    truth: dict[str, dict] = {}
    sides_labelled: dict[int, set[str]] = {}
    for photo_index, (photo, placed) in enumerate(zip(photos, _render_all(config, cameras, photos, individuals, root))):
        camera = cameras[photo.camera]
        rel_path = _photo_path(camera, photo)

        detections = []
        for k, deer in enumerate(sorted(placed, key=lambda d: d.bbox[0])):
            ind = season_view(individuals[deer.individual], photo.season)
            key = f"{rel_path}#{k}"
            x0, y0, x1, y1 = deer.bbox
            detection: dict = {
                "key": key,
                "bbox": {"x": x0, "y": y0, "width": round(x1 - x0, 1), "height": round(y1 - y0, 1)},
                "confidence": deer.confidence,
                "classification": "unknown" if (photo_index, deer.individual) in unknown else ind.sex,
            }
            if (photo_index, deer.individual) in labelled:
                detection["label"] = ind.name
                sides_labelled.setdefault(deer.individual, set()).add(side_seen(deer.pose))
            detections.append(detection)
            truth[key] = {
                "deer": ind.name,
                "sex": ind.sex,
                "antler_points": ind.antler_left + ind.antler_right,
                "antler_points_left": ind.antler_left,
                "antler_points_right": ind.antler_right,
                "pose": deer.pose,
                "night": photo.night,
                "occluded": deer.occluded,
                "antler_season": antler_season(photo.timestamp).label,
            }
            if ind.sex == "buck":  # 16 x [x, y, visibility] in pixels (see demo/antler_truth.py)
                truth[key]["antler_keypoints"] = as_rows(deer.keypoints)
        image_entries.append(
            {
                "file": rel_path,
                "camera": camera.name,
                "timestamp": photo.timestamp.isoformat(),
                "detections": detections,
            }
        )

    detections_doc = {
        "format": DETECTIONS_FORMAT,
        "cameras": [
            {
                "name": camera.name,
                "description": camera.description,
                "latitude": camera.latitude,
                "longitude": camera.longitude,
            }
            for camera in cameras
        ],
        "images": image_entries,
    }
    truth_doc = {
        "format": GROUND_TRUTH_FORMAT,
        "seed": config.seed,
        "config": asdict(config),
        "individuals": [
            {
                "name": ind.name,
                "sex": ind.sex,
                "antler_points": ind.antler_left + ind.antler_right,
                "antler_points_left": ind.antler_left,
                "antler_points_right": ind.antler_right,
                "profiled": ind.profiled,
                "marks": true_marks(ind),
                "body_length": round(ind.length, 4),
                **({"antler_points_previous_season": {"left": ind.antler_previous[0],
                                                      "right": ind.antler_previous[1]}}
                   if ind.antler_previous is not None else {}),
            }
            for ind in individuals
        ],
        "detections": truth,
    }
    detections_file = root / "detections.json"
    ground_truth_file = root / "ground_truth.json"
    _write_json(detections_file, detections_doc)
    _write_json(ground_truth_file, truth_doc)
    write_antler_annotations(root, image_entries, truth, config.image_width, config.image_height)
    write_hunter_marks(root, individuals, sides_labelled)
    n_labelled = sum("label" in d for entry in image_entries for d in entry["detections"])
    return DatasetSummary(
        root=root,
        n_images=len(photos),
        n_detections=len(truth),
        n_individuals=len(individuals),
        n_labelled=n_labelled,
        detections_file=detections_file,
        ground_truth_file=ground_truth_file,
    )


def _photo_path(camera, photo) -> str:
    return f"images/{camera.name}/{camera.name}_{photo.number:05d}.jpg"


_JOB: tuple | None = None  # (config, cameras, photos, individuals, root) in a rendering worker
PARALLEL_FROM = 200  # photos: below this the worker start-up costs more than it saves


def _render_one(photo_index: int) -> list:
    """Render photo ``photo_index`` of the job, write its JPEG, return the deer placed in it. Each photo
    has its own seeded stream, so the result does not depend on which process renders it."""
    config, cameras, photos, individuals, root = _JOB
    photo = photos[photo_index]
    camera = cameras[photo.camera]
    rng = np.random.default_rng([config.seed, _STREAM_PHOTO, photo_index])
    image, placed = _render_photo(config, camera, photo, individuals, rng)
    file_path = root / _photo_path(camera, photo)
    file_path.parent.mkdir(parents=True, exist_ok=True)
    image.save(file_path, format="JPEG", quality=JPEG_QUALITY)
    return placed


def _start_worker(job: tuple) -> None:
    global _JOB
    _JOB = job


def _render_all(config: SyntheticConfig, cameras: list, photos: list, individuals: list, root: Path) -> list[list]:
    """Every photo rendered and written, in order; in one process per core for a large set."""
    global _JOB
    job = (config, cameras, photos, individuals, root)
    workers = min(os.cpu_count() or 1, 8)
    if workers < 2 or len(photos) < PARALLEL_FROM or "fork" not in multiprocessing.get_all_start_methods():
        _JOB = job
        try:
            return [_render_one(i) for i in range(len(photos))]
        finally:
            _JOB = None
    # fork: the workers inherit the job and need no re-import of the caller's main module (which spawn
    # would run again); the parent holds no lock they need (rendering is numpy + Pillow only)
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(job,)) as pool:
        return list(pool.map(_render_one, range(len(photos)), chunksize=16))


def load_ground_truth(path: Path) -> dict:
    """Parse a ``ground_truth.json`` written by :func:`generate_dataset`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("format") != GROUND_TRUTH_FORMAT:
        raise ValueError(f"{path}: not a {GROUND_TRUTH_FORMAT} file (format={data.get('format')!r})")
    return data


def camera_background(config: SyntheticConfig, camera: int) -> np.ndarray:
    """The fixed daylight scene of camera ``camera`` (0-based) as a ``uint8`` H x W x 3 array.

    Photos add per-photo exposure, tint, blur and noise on top of it (and infrared conversion at
    night).
    """
    return _make_camera(config, camera).background.copy()


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
