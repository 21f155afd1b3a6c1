"""An annotated object in one photo, in coordinates relative to the photo (0-1), as both annotation
formats (YOLOv8-pose, Label Studio) can express it without knowing the photo's pixel size."""

from __future__ import annotations

from dataclasses import dataclass, field

from deer_reid_assets.core.antlers import layout

CLASSES = ("buck", "doe", "fawn")  # YOLO class ids 0, 1, 2 in the existing system's data.yaml


@dataclass(frozen=True)
class RelPoint:
    index: int
    x: float  # 0-1 of the photo's width
    y: float  # 0-1 of the photo's height
    visibility: int = 2


@dataclass
class Annotation:
    """One animal: its class, box (centre x, centre y, width, height; 0-1) and antler keypoints
    (only those annotated; none for does and fawns)."""

    classification: str
    box: tuple[float, float, float, float]
    points: list[RelPoint] = field(default_factory=list)


@dataclass
class AnnotatedImage:
    key: str  # the photo's file name as the annotations name it
    annotations: list[Annotation]
    split: str | None = None  # train / val / test when the dataset says
    width: int | None = None  # pixels, when the format says (Label Studio does)
    height: int | None = None


@dataclass(frozen=True)
class FileError:
    """One unusable input file (or object in it) and why, in one line."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def to_pixels(points: list[RelPoint], width: int, height: int, confidence: float = 1.0) -> list[layout.Point]:
    """Relative keypoints -> ``layout.Point`` in pixels; a not-visible point (0) is left out."""
    return [layout.Point(p.index, p.x * width, p.y * height, p.visibility, confidence)
            for p in points if p.visibility > 0]


def from_pixels(points: list[layout.Point], width: int, height: int) -> list[RelPoint]:
    return [RelPoint(p.index, p.x / width, p.y / height, p.visibility) for p in points if p.visibility > 0]
