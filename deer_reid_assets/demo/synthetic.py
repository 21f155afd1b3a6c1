"""Seeded synthetic trail-camera photos of white-tailed deer, with ground truth.

Replaces real data for the demo and the tests. Every individual carries stable identity cues
(body proportions, coat tone, throat patch, a flank mark, leg length and, for bucks, an antler
configuration with a known number of points per side), while every photo varies pose, distance,
position, occlusion, blur, exposure, sensor noise and day/night (infrared greyscale) lighting, so
re-identification is learnable but not trivial.

Output of :func:`generate_dataset` under ``out_dir``:

* ``images/<camera>/<camera>_<NNNNN>.jpg`` -- the photos, numbered chronologically per camera;
* ``detections.json`` -- what a detector plus a human reviewer give (format
  ``deer-reid-detections/1``); human labels only on part of the detections of profiled animals;
* ``ground_truth.json`` -- the hidden truth for evaluation (format ``deer-reid-ground-truth/1``).

The same :class:`SyntheticConfig` always gives byte-identical files: all randomness comes from
``numpy.random.Generator`` streams derived from ``config.seed``.
"""

from __future__ import annotations

import colorsys
import json
import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

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
    for photo_index, photo in enumerate(photos):
        camera = cameras[photo.camera]
        rel_path = f"images/{camera.name}/{camera.name}_{photo.number:05d}.jpg"
        rng = np.random.default_rng([config.seed, _STREAM_PHOTO, photo_index])
        image, placed = _render_photo(config, camera, photo, individuals, rng)
        file_path = root / rel_path
        file_path.parent.mkdir(parents=True, exist_ok=True)
        image.save(file_path, format="JPEG", quality=JPEG_QUALITY)

        detections = []
        for k, deer in enumerate(sorted(placed, key=lambda d: d.bbox[0])):
            ind = individuals[deer.individual]
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
            }
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
            }
            for ind in individuals
        ],
        "detections": truth,
    }
    detections_file = root / "detections.json"
    ground_truth_file = root / "ground_truth.json"
    _write_json(detections_file, detections_doc)
    _write_json(ground_truth_file, truth_doc)
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


# --------------------------------------------------------------------------------------------
# Individuals


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
    mark_kind: str  # "patch", "spots" or "scar"
    mark_position: tuple[float, float]  # on the flank, relative to the body ellipse radii
    mark_size: float
    mark_angle: float
    mark_spots: tuple[tuple[float, float], ...]
    mark: Rgb
    antler_left: int  # points (tines + beam tip) on the deer's own left side; 0 for does
    antler_right: int
    antler_size: float
    tine_length: float
    tine_factors: tuple[float, ...]
    antler: Rgb
    home_range: tuple[float, ...]  # probability of showing up at each camera


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
        mark_kind = str(rng.choice(["patch", "spots", "scar"]))
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
                mark_kind=mark_kind,
                mark_position=(rng.uniform(-0.6, 0.4), rng.uniform(-0.45, 0.3)),
                mark_size=rng.uniform(0.035, 0.07),
                mark_angle=rng.uniform(0, math.pi),
                mark_spots=tuple(
                    (float(dx), float(dy))
                    for dx, dy in rng.uniform(-0.07, 0.07, size=(int(rng.integers(3, 7)), 2))
                ),
                mark=_lighten(coat, rng.uniform(0.45, 0.75)),
                antler_left=left,
                antler_right=right,
                antler_size=0.27 + 0.025 * max(left, right) + rng.uniform(-0.02, 0.02),
                tine_length=rng.uniform(0.14, 0.2),
                tine_factors=tuple(float(f) for f in rng.uniform(0.75, 1.15, size=6)),
                antler=_grey(rng.uniform(175, 215), tint=(1.05, 1.0, 0.85)),
                home_range=tuple(float(p) for p in rng.dirichlet(np.full(config.n_cameras, 4.0))),
            )
        )
    return individuals


# --------------------------------------------------------------------------------------------
# Cameras and their scenes


@dataclass(frozen=True)
class _Camera:
    name: str
    description: str
    latitude: float
    longitude: float
    horizon: int  # y of the far ground edge, pixels
    ground_bottom: int  # y of the info bar's top edge, pixels
    background: np.ndarray  # uint8 H x W x 3 daylight scene
    flash: np.ndarray  # float32 H x W: infrared flash cone, bright in the centre
    night_gain: np.ndarray  # float32 H x W: flash on the empty scene, dark in the distance


def _make_camera(config: SyntheticConfig, index: int) -> _Camera:
    rng = np.random.default_rng([config.seed, _STREAM_CAMERA, index])
    w, h = config.image_width, config.image_height
    bar = _info_bar_height(h)
    horizon = int(h * rng.uniform(0.3, 0.45))
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]

    # Far woods: autumn canopy with gaps of sky, denser towards the ground.
    palette = np.array(
        [[74, 96, 48], [120, 120, 60], [170, 110, 40], [190, 150, 60], [140, 70, 35], [95, 80, 60]],
        dtype=np.float32,
    )
    c0, c1, c2 = palette[rng.choice(len(palette), size=3, replace=False)]
    coarse, medium, fine = (_smooth_noise(rng, h, w, cell) for cell in (64, 16, 5))
    foliage = (0.5 * coarse + 0.3 * medium + 0.2 * fine)[..., None]
    canopy = np.where(foliage < 0.5, c0 + (c1 - c0) * foliage * 2, c1 + (c2 - c1) * (foliage * 2 - 1))
    sky = np.array([rng.uniform(170, 200), rng.uniform(185, 210), rng.uniform(200, 225)], np.float32)
    gap = np.clip((0.6 * medium + 0.4 * fine + (1 - ys / horizon) * 0.7 - 0.8) * 5, 0, 1)[..., None]
    upper = canopy * (1 - gap) + sky * gap

    # Ground: leaf litter or dry grass, lighter and more textured towards the camera.
    grounds = [[112, 84, 58], [100, 98, 62], [126, 116, 90], [92, 88, 80]]  # leaves, grass, dry grass, mud
    litter = np.array(grounds[int(rng.integers(len(grounds)))], np.float32) * rng.uniform(0.85, 1.1)
    patches, grain = _smooth_noise(rng, h, w, 24), _smooth_noise(rng, h, w, 3)
    depth = np.clip((ys - horizon) / max(h - horizon, 1), 0, 1)
    ground = litter * (0.75 + 0.3 * depth + 0.25 * (patches - 0.5) + 0.2 * (grain - 0.5))[..., None]
    blend = np.clip((ys - horizon) / 6 + 0.5, 0, 1)[..., None]
    scene = upper * (1 - blend) + ground * blend

    image = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 7))):  # tree trunks, wider ones nearer (standing lower)
        nearness = rng.uniform(0, 1)
        half = w * (0.008 + 0.03 * nearness)
        x = rng.uniform(0, w)
        base = horizon + nearness * 0.35 * (h - horizon)
        colour = _grey(rng.uniform(55, 95), tint=(1.08, 1.0, 0.92))
        trunk = [(x - 0.8 * half, 0), (x + 0.8 * half, 0), (x + half, base), (x - half, base)]
        draw.polygon(trunk, fill=colour)
        for _ in range(int(half // 3)):  # bark furrows
            fx = x + rng.uniform(-0.8, 0.8) * half
            furrow = [(fx, rng.uniform(0, base)), (fx, rng.uniform(0, base))]
            draw.line(furrow, fill=_scale(colour, 0.7), width=1)
    for _ in range(int(w * 0.5)):  # grass and weed tufts, taller near the camera
        y = rng.uniform(horizon, h)
        nearness = (y - horizon) / (h - horizon)
        x = rng.uniform(0, w)
        colour = _rgb(np.array([rng.uniform(110, 170), rng.uniform(105, 150), rng.uniform(55, 80)]) / 255)
        for _ in range(int(rng.integers(2, 5))):
            length = (3 + 16 * nearness) * rng.uniform(0.5, 1.2)
            angle = rng.uniform(-0.5, 0.5)
            blade = [(x, y), (x + length * math.sin(angle), y - length * math.cos(angle))]
            draw.line(blade, fill=colour, width=1)
    image = image.filter(ImageFilter.GaussianBlur(0.6))

    radial = ((xs - w / 2) / (w / 2)) ** 2 + ((ys - h * 0.6) / (h / 2)) ** 2
    reach = np.clip(0.2 + 0.8 * (ys - horizon * 0.8) / (0.4 * (h - horizon) + 1), 0.2, 1.0)
    flash = np.clip(1.2 - 0.55 * radial, 0.35, 1.2).astype(np.float32)

    return _Camera(
        name=f"cam{index + 1:02d}",
        description=f"Trail camera at the {_CAMERA_PLACES[index % len(_CAMERA_PLACES)]}",
        latitude=round(_SITE_LATITUDE + rng.uniform(-0.02, 0.02), 5),
        longitude=round(_SITE_LONGITUDE + rng.uniform(-0.03, 0.03), 5),
        horizon=horizon,
        ground_bottom=h - bar,
        background=np.asarray(image),
        flash=flash,
        night_gain=flash * reach.astype(np.float32),
    )


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Value noise in [0, 1] with features about ``cell`` pixels wide, float32 H x W."""
    small = rng.random((h // cell + 2, w // cell + 2), dtype=np.float32)
    return np.clip(np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)), 0, 1)


def _info_bar_height(image_height: int) -> int:
    return max(10, round(image_height * 0.045))


# --------------------------------------------------------------------------------------------
# Photo plan: which deer, where, when; and which detections a human reviewed


@dataclass(frozen=True)
class _Photo:
    camera: int
    number: int  # 1-based, chronological within the camera
    timestamp: datetime
    night: bool
    deer: tuple[int, ...]  # indices into the individuals, distinct


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

    photos = []
    numbers = [0] * config.n_cameras
    for camera, timestamp, _, is_night, deer in sorted(drafts):
        numbers[camera] += 1
        photos.append(_Photo(camera, numbers[camera], timestamp, is_night, deer))
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


# --------------------------------------------------------------------------------------------
# Drawing a deer
#
# Shapes are polygons in "deer coordinates": x forward (towards the head), y down, the unit is
# one body length, the origin is on the ground under the middle of the body.


@dataclass(frozen=True)
class _Shape:
    points: np.ndarray  # (n, 2) polygon in deer coordinates
    fill: Rgb


def _deer_shapes(
    ind: _Individual, rng: np.random.Generator, near_side_left: bool, night: bool
) -> list[_Shape]:
    """All polygons of one deer in side view facing +x, back to front."""
    bh, leg = ind.body_height, ind.leg_length
    cy = -leg - bh / 2  # body centre
    coat, far = ind.coat, _scale(ind.coat, 0.72)
    hoof = _scale(ind.coat, 0.3)
    shapes: list[_Shape] = []

    def add(points: np.ndarray, fill: Rgb) -> None:
        shapes.append(_Shape(points, fill))

    # Legs: far pair first (darker, shifted back), near pair in front; stride varies per photo.
    for dx, colour in ((-0.05, far), (0.02, coat)):
        stride = rng.uniform(-0.06, 0.06)
        fx = 0.3 + dx
        front = np.array([[fx, cy + bh * 0.2], [fx + 0.01, -leg * 0.45], [fx + stride, 0.0]])
        add(_tapered(front, 0.075, 0.035), colour)
        rx = -0.3 + dx
        hip, stifle = [rx, cy + bh * 0.1], [rx + 0.05, -leg * 0.7]
        rear = np.array([hip, stifle, [rx - 0.06, -leg * 0.35], [rx - 0.03 - stride, 0.0]])
        add(_tapered(rear, 0.12, 0.035), colour)
        for x in (fx + stride, rx - 0.03 - stride):
            add(_ellipse(x + 0.01, -0.012, 0.024, 0.015), hoof)

    # Neck and head geometry (the head carriage varies per photo).
    neck_angle = ind.neck_angle + rng.normal(0, math.radians(8))
    head_angle = ind.head_angle + rng.normal(0, math.radians(6))
    neck_dir = np.array([math.cos(neck_angle), -math.sin(neck_angle)])
    neck_normal = np.array([math.sin(neck_angle), math.cos(neck_angle)])  # forward-down
    neck_base = np.array([0.38, cy - bh * 0.1])
    neck_top = neck_base + ind.neck_length * neck_dir
    head_dir = np.array([math.cos(head_angle), math.sin(head_angle)])
    head_up = np.array([head_dir[1], -head_dir[0]])
    hl = ind.head_length
    head_centre = neck_top + head_dir * hl * 0.3

    def antler(points: int, offset: np.ndarray, size: float, colour: Rgb) -> None:
        base = neck_top + head_dir * hl * 0.05 + head_up * hl * 0.22 + offset
        a = ind.antler_size * size
        beam = _bezier(base, base + a * np.array([-0.35, -0.9]), base + a * np.array([0.85, -0.75]), 18)
        add(_tapered(beam, 0.04, 0.012), colour)
        ts = [0.1] + list(np.linspace(0.38, 0.82, points - 2)) if points >= 2 else []
        for j, t in enumerate(ts):
            i = round(t * (len(beam) - 1))
            p = beam[i]
            up = np.array([0.15 if j == 0 else rng.uniform(-0.05, 0.2), -1.0])  # tines rise, leaning forward
            length = ind.tine_length * ind.tine_factors[j] * (0.5 if j == 0 else 1.0)
            tine = np.array([p, p + up * length * 0.5, p + up * length])
            add(_tapered(tine, 0.026, 0.005), colour)

    near_points = ind.antler_left if near_side_left else ind.antler_right
    far_points = ind.antler_right if near_side_left else ind.antler_left
    if far_points:
        antler(far_points, np.array([-0.05, 0.01]), 0.95, _scale(ind.antler, 0.8))
    far_ear = neck_top - head_dir * hl * 0.05 + head_up * hl * 0.25
    add(_ellipse(*far_ear, 0.095, 0.036, -2.0), far)

    # Tail, body (haunch, barrel, shoulder), belly, flank mark.
    tail = np.array([[-0.47, cy - bh * 0.38], [-0.6, cy - bh * 0.02], [-0.5, cy + bh * 0.02]])
    add(tail, _scale(coat, 0.85))
    add(_ellipse(-0.3, cy + 0.02, 0.2, bh * 0.48), coat)
    add(_ellipse(0.0, cy, 0.5, bh / 2), coat)
    add(_ellipse(0.3, cy - 0.01, 0.18, bh * 0.5), coat)
    belly = _ellipse(0.0, cy, 0.5, bh / 2, n=48)
    add(belly[belly[:, 1] > cy + bh * 0.22], ind.belly)
    add(belly[belly[:, 1] < cy - bh * 0.3], _scale(coat, 0.88))  # darker back
    mx, my = ind.mark_position
    mark_centre = np.array([mx * 0.5, cy + my * bh / 2])
    if ind.mark_kind == "patch":
        add(_ellipse(*mark_centre, ind.mark_size, ind.mark_size * 0.7, ind.mark_angle), ind.mark)
    elif ind.mark_kind == "spots":
        for dx, dy in ind.mark_spots:
            add(_ellipse(mark_centre[0] + dx, mark_centre[1] + dy, 0.014, 0.012), ind.mark)
    else:
        direction = np.array([math.cos(ind.mark_angle), math.sin(ind.mark_angle)]) * ind.mark_size * 1.4
        scar = np.array([mark_centre - direction, mark_centre + 0.2 * direction, mark_centre + direction])
        add(_tapered(scar + np.array([[0, 0], [0, 0.01], [0, 0]]), 0.012, 0.006), ind.mark)

    # Neck, throat patch, head, muzzle, eye, near ear, near antler.
    top_half = ind.neck_width * 0.4
    add(
        np.array(
            [
                neck_base - neck_normal * ind.neck_width * 0.6,
                neck_top - neck_normal * top_half,
                neck_top + neck_normal * top_half,
                neck_base + neck_normal * ind.neck_width * 0.9,
            ]
        ),
        coat,
    )
    throat = neck_top + neck_normal * top_half * 0.9 - neck_dir * 0.03
    add(_ellipse(*throat, 0.045 * ind.throat_size, 0.03 * ind.throat_size, neck_angle), ind.throat)
    add(_ellipse(*head_centre, hl * 0.45, hl * 0.24, head_angle), coat)
    muzzle = neck_top + head_dir * hl * 0.72
    add(_ellipse(*muzzle, hl * 0.25, hl * 0.16, head_angle), _scale(coat, 0.9))
    add(_ellipse(*(muzzle - head_up * hl * 0.08), hl * 0.12, hl * 0.07, head_angle), ind.throat)
    add(_ellipse(*(neck_top + head_dir * hl * 0.93), hl * 0.08, hl * 0.07), (30, 25, 22))
    eye_colour = (250, 250, 250) if night else (20, 16, 14)  # eyeshine under infrared
    add(_ellipse(*(neck_top + head_dir * hl * 0.33 + head_up * hl * 0.07), 0.018, 0.015), eye_colour)
    add(_ellipse(*(neck_top - head_dir * hl * 0.02 + head_up * hl * 0.27), 0.1, 0.038, -2.3), coat)
    if near_points:
        antler(near_points, np.zeros(2), 1.0, ind.antler)
    return shapes


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 28) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _tapered(path: np.ndarray, w0: float, w1: float) -> np.ndarray:
    """Polygon around a polyline whose width goes linearly from ``w0`` to ``w1``."""
    tangent = np.gradient(path, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    half = np.linspace(w0, w1, len(path))[:, None] / 2
    return np.concatenate([path + normal * half, (path - normal * half)[::-1]])


# --------------------------------------------------------------------------------------------
# Rendering a photo


@dataclass(frozen=True)
class _Placed:
    individual: int
    pose: str  # direction the deer faces in the photo: "left" or "right"
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1 as a detector reports it
    occluded: float
    confidence: float


@dataclass(frozen=True)
class _Layout:
    individual: int
    pose: str
    shapes: list[_Shape]
    scale: float  # distance scale, _MIN_SCALE (far) to _MAX_SCALE (near)
    pixels_per_unit: float
    origin: tuple[float, float]  # image position of the deer-coordinate origin
    box: tuple[float, float, float, float]  # extent of the shapes in the image


def _render_photo(
    config: SyntheticConfig,
    camera: _Camera,
    photo: _Photo,
    individuals: list[_Individual],
    rng: np.random.Generator,
) -> tuple[Image.Image, list[_Placed]]:
    w, h = config.image_width, config.image_height
    image = Image.fromarray(camera.background)
    layouts: list[_Layout] = []
    for d in photo.deer:
        layouts.append(_layout_deer(individuals[d], d, camera, w, photo.night, layouts, rng))
    layouts.sort(key=lambda lay: lay.origin[1])  # far (higher up) deer first

    owner = np.full((h, w), -1, dtype=np.int16)  # which deer is visible at each pixel
    light = camera.night_gain.copy()  # infrared illumination, used at night only
    areas, tight_boxes = [], []
    draw = ImageDraw.Draw(image)
    for index, lay in enumerate(layouts):
        sprite, left, top = _rasterise(lay, rng)
        image.paste(sprite, (left, top), sprite)
        alpha = np.asarray(sprite)[:, :, 3]
        window = (slice(top, top + alpha.shape[0]), slice(left, left + alpha.shape[1]))
        visible = alpha >= 128
        owner[window][visible] = index
        areas.append(int(visible.sum()))
        ys, xs = np.nonzero(alpha >= 64)
        tight_boxes.append((left + xs.min(), top + ys.min(), left + xs.max() + 1, top + ys.max() + 1))
        # The flash lights a deer (and a bush at its depth) by distance, not by height in the frame.
        reach = 0.7 + 0.45 * (lay.scale - _MIN_SCALE) / (_MAX_SCALE - _MIN_SCALE)
        weight = alpha.astype(np.float32) / 255
        light[window] = light[window] * (1 - weight) + camera.flash[window] * reach * weight
        if rng.random() < _OCCLUSION_PROBABILITY:
            mask = Image.new("L", (w, h), 0)
            _draw_occluder(draw, ImageDraw.Draw(mask), tight_boxes[-1], rng)
            covered = np.asarray(mask) > 0
            owner[covered] = -1
            light[covered] = camera.flash[covered] * reach

    blurred = rng.random() < (0.25 if photo.night else 0.12)
    if blurred:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 2.0)))
    pixels = np.asarray(image, dtype=np.float32)
    if photo.night:
        grey = pixels @ np.array([0.2, 0.65, 0.15], np.float32)  # foliage is bright in infrared
        grey = grey * light * rng.uniform(0.85, 1.2)
        grey += rng.standard_normal((h, w), dtype=np.float32) * rng.uniform(5, 10)
        pixels = np.repeat(grey[..., None], 3, axis=2)
    else:
        tint = rng.uniform(0.95, 1.05, size=3).astype(np.float32)
        pixels = pixels * (rng.uniform(0.85, 1.12) * tint)
        pixels += rng.standard_normal((h, w, 3), dtype=np.float32) * rng.uniform(1.5, 4)
    image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
    _draw_info_bar(image, camera, photo, rng)

    placed = []
    for index, lay in enumerate(layouts):
        occluded = 1.0 - float((owner == index).sum()) / max(areas[index], 1)
        confidence = (
            0.97
            - 0.45 * occluded
            - (0.08 if photo.night else 0.0)
            - (0.06 if blurred else 0.0)
            - 0.15 * max(0.0, 0.8 - lay.scale)
            + rng.normal(0, 0.03)
        )
        placed.append(
            _Placed(
                individual=lay.individual,
                pose=lay.pose,
                bbox=_jitter_box(tight_boxes[index], w, camera.ground_bottom, rng),
                occluded=round(occluded, 3),
                confidence=round(float(np.clip(confidence, 0.3, 0.99)), 3),
            )
        )
    return image, placed


def _layout_deer(
    ind: _Individual,
    index: int,
    camera: _Camera,
    width: int,
    night: bool,
    others: list[_Layout],
    rng: np.random.Generator,
) -> _Layout:
    """Pick pose, distance and position; keep clear of deer already placed in the photo."""
    pose = "right" if rng.random() < 0.5 else "left"
    # Facing right, the camera sees the deer's left side.
    shapes = _deer_shapes(ind, rng, near_side_left=pose == "right", night=night)
    sign = 1.0 if pose == "right" else -1.0
    allp = np.concatenate([s.points for s in shapes])
    xs = allp[:, 0] * sign
    x_min, x_max, y_min, y_max = xs.min(), xs.max(), allp[:, 1].min(), allp[:, 1].max()

    scale = rng.uniform(_MIN_SCALE, _MAX_SCALE)
    margin = 2.0
    usable_h = camera.ground_bottom - 2 * margin
    ppu = min(scale * ind.length * width, usable_h / (y_max - y_min), (width - 2 * margin) / (x_max - x_min))
    nearness = (scale - _MIN_SCALE) / (_MAX_SCALE - _MIN_SCALE)
    far_y = camera.horizon + 0.1 * (camera.ground_bottom - camera.horizon)
    feet_y = far_y + nearness * (camera.ground_bottom - far_y) + rng.normal(0, 0.03 * camera.ground_bottom)
    feet_y = float(np.clip(feet_y, margin - y_min * ppu, camera.ground_bottom - margin - y_max * ppu))
    x_lo, x_hi = margin - x_min * ppu, width - margin - x_max * ppu

    best: tuple[float, float] | None = None
    for _ in range(30):
        ox = rng.uniform(x_lo, x_hi)
        box = (ox + x_min * ppu, feet_y + y_min * ppu, ox + x_max * ppu, feet_y + y_max * ppu)
        overlap = max((_iou(box, other.box) for other in others), default=0.0)
        if best is None or overlap < best[1]:
            best = (ox, overlap)
        if overlap < 0.2:
            break
    ox = best[0]
    box = (ox + x_min * ppu, feet_y + y_min * ppu, ox + x_max * ppu, feet_y + y_max * ppu)
    return _Layout(index, pose, shapes, scale, ppu, (ox, feet_y), box)


def _rasterise(lay: _Layout, rng: np.random.Generator) -> tuple[Image.Image, int, int]:
    """Draw a laid-out deer as an RGBA sprite with a little fur texture; return it and its position."""
    sign = 1.0 if lay.pose == "right" else -1.0
    ox, oy = lay.origin
    left, top = math.floor(lay.box[0]) - 1, math.floor(lay.box[1]) - 1
    size = (math.ceil(lay.box[2]) + 1 - left, math.ceil(lay.box[3]) + 1 - top)
    ss = _SUPERSAMPLE
    canvas = Image.new("RGBA", (size[0] * ss, size[1] * ss), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for shape in lay.shapes:
        px = (ox + sign * shape.points[:, 0] * lay.pixels_per_unit - left) * ss
        py = (oy + shape.points[:, 1] * lay.pixels_per_unit - top) * ss
        draw.polygon(list(zip(px.tolist(), py.tolist())), fill=(*shape.fill, 255))
    sprite = np.asarray(canvas.reduce(ss), dtype=np.float32)
    fur = 1 + 0.07 * rng.standard_normal(sprite.shape[:2], dtype=np.float32)[..., None]
    sprite[..., :3] = np.clip(sprite[..., :3] * fur, 0, 255)
    return Image.fromarray(sprite.astype(np.uint8), "RGBA"), left, top


def _draw_occluder(
    draw: ImageDraw.ImageDraw,
    mask: ImageDraw.ImageDraw,
    box: tuple[float, float, float, float],
    rng: np.random.Generator,
) -> None:
    """Draw a bush or a leafy branch over part of ``box`` on the photo and, in white, on ``mask``."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    leaves = [(60, 80, 35), (85, 100, 40), (120, 70, 30), (150, 110, 40), (70, 60, 40)]

    def blob(cx: float, cy: float, r: float) -> None:
        colour = leaves[int(rng.integers(len(leaves)))]
        xy = (cx - r, cy - r * 0.8, cx + r, cy + r * 0.8)
        draw.ellipse(xy, fill=colour)
        mask.ellipse(xy, fill=255)

    if rng.random() < 0.7:  # bush in front of the legs or the chest
        cx, cy = rng.uniform(x0, x1), y1 - rng.uniform(0.0, 0.35) * bh
        radius = rng.uniform(0.2, 0.42) * bh
        for _ in range(int(rng.integers(10, 19))):
            r = radius * rng.uniform(0.3, 0.6)
            blob(cx + rng.normal(0, 0.6) * radius, cy + rng.normal(0, 0.4) * radius, r)
    else:  # branch across the body with a few leaves
        y_left, y_right = y0 + rng.uniform(0.2, 0.7, size=2) * bh
        start, end = (x0 - 0.2 * bw, y_left), (x1 + 0.2 * bw, y_right)
        sag = rng.uniform(-0.1, 0.1) * bh
        middle = np.array([(x0 + x1) / 2, (y_left + y_right) / 2 + sag])
        path = _bezier(np.array(start), middle, np.array(end), 12)
        points = [tuple(p) for p in path.tolist()]
        width = max(2, round(rng.uniform(0.03, 0.07) * bh))
        draw.line(points, fill=(70, 55, 40), width=width, joint="curve")
        mask.line(points, fill=255, width=width, joint="curve")
        for p in path[rng.choice(len(path), size=int(rng.integers(3, 7)), replace=False)]:
            r = rng.uniform(0.03, 0.07) * bh
            blob(p[0] + rng.normal(0, 0.04 * bw), p[1] + rng.normal(0, 0.04 * bh), r)


def _draw_info_bar(image: Image.Image, camera: _Camera, photo: _Photo, rng: np.random.Generator) -> None:
    """Black strip with camera name, time and temperature, as trail cameras print."""
    w, h = image.size
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, camera.ground_bottom, w, h), fill=(0, 0, 0))
    celsius = int(rng.integers(-8, 6) if photo.night else rng.integers(0, 18))
    text = f"{camera.name.upper()}  {photo.timestamp:%Y-%m-%d %H:%M:%S}  {celsius}C"
    bar = h - camera.ground_bottom
    position = (4, camera.ground_bottom + bar * 0.12)
    draw.text(position, text, fill=(235, 235, 235), font=_font(round(bar * 0.75)))


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _jitter_box(
    box: tuple[float, float, float, float], width: int, bottom: int, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """A detector's slightly loose or tight version of ``box``, inside the image, rounded to 0.1 px."""
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = x1 - x0, y1 - y0
    jx0, jy0, jx1, jy1 = (float(v) for v in rng.normal(0, 0.015, size=4))
    x0, x1 = max(0.0, x0 + jx0 * bw), min(float(width), x1 + jx1 * bw)
    y0, y1 = max(0.0, y0 + jy0 * bh), min(float(bottom), y1 + jy1 * bh)
    return round(x0, 1), round(y0, 1), round(x1, 1), round(y1, 1)


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# --------------------------------------------------------------------------------------------
# Small helpers


def _rgb(values: tuple[float, float, float] | np.ndarray) -> Rgb:
    """Colour from 0..1 floats."""
    r, g, b = (int(round(float(np.clip(v, 0, 1)) * 255)) for v in values)
    return r, g, b


def _grey(level: float, tint: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Rgb:
    return _rgb(tuple(level * t / 255 for t in tint))


def _scale(colour: Rgb, factor: float) -> Rgb:
    return _rgb(tuple(c * factor / 255 for c in colour))


def _lighten(colour: Rgb, amount: float) -> Rgb:
    """Blend towards an off-white by ``amount`` in [0, 1]."""
    return _rgb(tuple((c + (v - c) * amount) / 255 for c, v in zip(colour, (236, 228, 214))))


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
