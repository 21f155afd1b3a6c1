"""Drawing one deer as polygons in deer coordinates, with the cues of the side it shows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .antler_truth import AntlerPoint, antler_points
from .common import Rgb, _scale
from .individuals import _Individual

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
    ind: _Individual, rng: np.random.Generator, near_side_left: bool, night: bool,
    keypoints: list[AntlerPoint] | None = None,
) -> list[_Shape]:
    """All polygons of one deer in side view facing +x, back to front. With ``keypoints`` (a list),
    the antlers' beam bases, tine tips and beam tips are appended to it (see ``antler_truth``)."""
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

    def antler(points: int, offset: np.ndarray, size: float, colour: Rgb, near: bool) -> None:
        base = neck_top + head_dir * hl * 0.05 + head_up * hl * 0.22 + offset
        a = ind.antler_size * size
        beam = _bezier(base, base + a * np.array([-0.35, -0.9]), base + a * np.array([0.85, -0.75]), 18)
        add(_tapered(beam, 0.04, 0.012), colour)
        ts = [0.1] + list(np.linspace(0.38, 0.82, points - 2)) if points >= 2 else []
        tips = []
        for j, t in enumerate(ts):
            i = round(t * (len(beam) - 1))
            p = beam[i]
            up = np.array([0.15 if j == 0 else rng.uniform(-0.05, 0.2), -1.0])  # tines rise, leaning forward
            length = ind.tine_length * ind.tine_factors[j] * (0.5 if j == 0 else 1.0)
            tine = np.array([p, p + up * length * 0.5, p + up * length])
            add(_tapered(tine, 0.026, 0.005), colour)
            tips.append(tine[-1])
        if keypoints is not None:
            side = ("left" if near_side_left else "right") if near else ("right" if near_side_left else "left")
            keypoints.extend(antler_points(side, beam, tips, layer=len(shapes)))

    near_points = ind.antler_left if near_side_left else ind.antler_right
    far_points = ind.antler_right if near_side_left else ind.antler_left
    if far_points:
        antler(far_points, np.array([-0.05, 0.01]), 0.95, _scale(ind.antler, 0.8), near=False)
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
    mark = ind.marks[0 if near_side_left else 1]  # only the flank facing the camera is visible
    mx, my = mark.position
    mark_centre = np.array([mx * 0.5, cy + my * bh / 2])
    if mark.kind == "patch":
        add(_ellipse(*mark_centre, mark.size, mark.size * 0.7, mark.angle), mark.colour)
    elif mark.kind == "spots":
        for dx, dy in mark.spots:
            add(_ellipse(mark_centre[0] + dx, mark_centre[1] + dy, 0.016, 0.013), mark.colour)
    else:
        direction = np.array([math.cos(mark.angle), math.sin(mark.angle)]) * mark.size * 1.4
        scar = np.array([mark_centre - direction, mark_centre + 0.2 * direction, mark_centre + direction])
        add(_tapered(scar + np.array([[0, 0], [0, 0.01], [0, 0]]), 0.014, 0.007), mark.colour)

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
    near_ear = _ellipse(*(neck_top - head_dir * hl * 0.02 + head_up * hl * 0.27), 0.1, 0.038, -2.3)
    add(_notched(near_ear, ind.ear_notches[0 if near_side_left else 1]), coat)
    if near_points:
        antler(near_points, np.zeros(2), 1.0, ind.antler, near=True)
    return shapes


def _notched(outline: np.ndarray, notch: float | None) -> np.ndarray:
    """An ear outline with a V notch cut into its rim at ``notch`` (0..1 along the upper edge), or as is."""
    if notch is None:
        return outline
    n = len(outline)
    centre = outline.mean(axis=0)
    at = round(notch * (n // 2 - 1))
    cut = outline.copy()
    for offset, depth in ((-1, 0.25), (0, 0.55), (1, 0.25)):
        i = (at + offset) % n
        cut[i] = outline[i] + (centre - outline[i]) * depth
    return cut


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
