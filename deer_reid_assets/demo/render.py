"""Rendering a photo: layout, rasterising, occluders, exposure, night infrared, the info bar."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from . import antler_truth
from .common import _MAX_SCALE, _MIN_SCALE, _OCCLUSION_PROBABILITY, _SUPERSAMPLE
from .drawing import _bezier, _deer_shapes, _Shape
from .individuals import _Individual
from .plan import _Photo
from .scene import _Camera

if TYPE_CHECKING:
    from .synthetic import SyntheticConfig


# --------------------------------------------------------------------------------------------
# Rendering a photo


@dataclass(frozen=True)
class _Placed:
    individual: int
    pose: str  # direction the deer faces in the photo: "left" or "right"
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1 as a detector reports it
    occluded: float
    confidence: float
    keypoints: tuple = ()  # antler keypoints [index, x, y, visibility] in image pixels (see antler_truth)


@dataclass(frozen=True)
class _Layout:
    individual: int
    pose: str
    shapes: list[_Shape]
    scale: float  # distance scale, _MIN_SCALE (far) to _MAX_SCALE (near)
    pixels_per_unit: float
    origin: tuple[float, float]  # image position of the deer-coordinate origin
    box: tuple[float, float, float, float]  # extent of the shapes in the image
    keypoints: list = dataclasses.field(default_factory=list)  # [index, x, y, visibility] in image pixels


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
        ind = antler_truth.season_view(individuals[d], photo.season)
        layouts.append(_layout_deer(ind, d, camera, w, photo.night, layouts, rng))
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
        for earlier in layouts[:index]:  # a deer in front hides the antler points behind it
            antler_truth.cover(earlier.keypoints, visible, left, top)
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
            for lay_so_far in layouts[: index + 1]:
                antler_truth.cover(lay_so_far.keypoints, covered)
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
        antler_truth.in_frame(lay.keypoints, w, camera.ground_bottom)
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
                keypoints=tuple(tuple(p) for p in lay.keypoints),
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
    points: list[antler_truth.AntlerPoint] = []
    shapes = _deer_shapes(ind, rng, near_side_left=pose == "right", night=night, keypoints=points)
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
    keypoints = antler_truth.to_image(points, antler_truth.self_hidden(points, shapes), (ox, feet_y), ppu, sign)
    return _Layout(index, pose, shapes, scale, ppu, (ox, feet_y), box, keypoints)


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
