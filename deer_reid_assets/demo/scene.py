"""Trail cameras and their fixed scenes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .common import (
    _CAMERA_PLACES,
    _SITE_LATITUDE,
    _SITE_LONGITUDE,
    _STREAM_CAMERA,
    _grey,
    _rgb,
    _scale,
)

if TYPE_CHECKING:
    from .synthetic import SyntheticConfig


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
