"""The marks a person records for a deer, and the values each may take.

Sides are the deer's own (its left flank faces the camera when it faces right). A field a person did
not see is simply not recorded; ``none`` means they looked and there is none. These are recorded by
people (the review app's deer page, or an imported file): nothing here is measured from pixels.

* ``throat_patch``: the white throat patch, by size: none / small / medium / large;
* ``flank_left`` / ``flank_right``: a mark on that flank: none / patch (a pale patch) / spots / scar;
* ``ear_notch_left`` / ``ear_notch_right``: none / notched;
* ``body_size``: small / medium / large for its sex: overrides the measured class (``body_size.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

THROAT_PATCH = ("none", "small", "medium", "large")
FLANK_MARK = ("none", "patch", "spots", "scar")
EAR_NOTCH = ("none", "notched")
BODY_SIZE = ("small", "medium", "large")

FIELDS: dict[str, tuple[str, ...]] = {
    "throat_patch": THROAT_PATCH,
    "flank_left": FLANK_MARK,
    "flank_right": FLANK_MARK,
    "ear_notch_left": EAR_NOTCH,
    "ear_notch_right": EAR_NOTCH,
    "body_size": BODY_SIZE,
}
LABELS = {"throat_patch": "throat patch", "flank_left": "left flank mark", "flank_right": "right flank mark",
          "ear_notch_left": "left ear notch", "ear_notch_right": "right ear notch", "body_size": "body size class"}
NOT_SEEN = ("", "not seen", "unknown")  # what a form or a file may send for a field not recorded


class MarkError(ValueError):
    """A mark value that cannot be recorded; the message is one line naming the field and the value."""


def parse(values: Mapping[str, object], *, where: str = "") -> dict[str, str]:
    """The recorded marks in ``values`` (field -> value), checked: fields not seen are left out; an
    unknown field or value raises :class:`MarkError` naming it (prefixed with ``where``)."""
    prefix = f"{where}: " if where else ""
    out: dict[str, str] = {}
    for field, raw in values.items():
        if field not in FIELDS:
            raise MarkError(f"{prefix}unknown mark {field!r} (one of {', '.join(FIELDS)})")
        if raw is None:
            continue
        if not isinstance(raw, str):
            raise MarkError(f"{prefix}{field}: {raw!r} is not one of {', '.join(FIELDS[field])}")
        value = raw.strip().lower()
        if value in NOT_SEEN:
            continue
        if value not in FIELDS[field]:
            raise MarkError(f"{prefix}{field}: {raw!r} is not one of {', '.join(FIELDS[field])}")
        out[field] = value
    return out


def as_json(marks: Mapping[str, str]) -> dict:
    """The recorded marks as ``physical_features["marks"]`` holds them (body size is kept apart):
    ``{"throat_patch": "large", "flank_mark": {"left": "scar"}, "ear_notch": {"right": "notched"}}``."""
    out: dict = {}
    if "throat_patch" in marks:
        out["throat_patch"] = marks["throat_patch"]
    for key, prefix in (("flank_mark", "flank_"), ("ear_notch", "ear_notch_")):
        sides = {side: marks[prefix + side] for side in ("left", "right") if prefix + side in marks}
        if sides:
            out[key] = sides
    return out


def from_json(marks: Mapping) -> dict[str, str]:
    """``physical_features["marks"]`` back to the fields (the inverse of :func:`as_json`)."""
    out = {"throat_patch": marks["throat_patch"]} if "throat_patch" in marks else {}
    for key, prefix in (("flank_mark", "flank_"), ("ear_notch", "ear_notch_")):
        out.update({prefix + side: value for side, value in (marks.get(key) or {}).items()})
    return out


def describe(marks: Mapping[str, str]) -> str:
    """One line for a person, e.g. ``throat patch large, left flank scar, right ear notched``."""
    parts = []
    if "throat_patch" in marks:
        parts.append(f"throat patch {marks['throat_patch']}")
    for side in ("left", "right"):
        if f"flank_{side}" in marks:
            parts.append(f"{side} flank {marks[f'flank_{side}']}")
    for side in ("left", "right"):
        if f"ear_notch_{side}" in marks:
            parts.append(f"{side} ear {marks[f'ear_notch_{side}']}")
    if "body_size" in marks:
        parts.append(f"body {marks['body_size']} (recorded)")
    return ", ".join(parts) or "nothing recorded"
