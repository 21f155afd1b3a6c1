"""A deer's marks and body size as ``deer.physical_features`` holds them, next to the antler seasons:

```
{"antlers": {...},                                   # antler_features (core/antlers/profiles.py)
 "marks": {"throat_patch": "large", "flank_mark": {"left": "scar", "right": "none"},
           "ear_notch": {"left": "notched"}, "recorded_by": "ann", "recorded_at": "...",
           "source": "review app", "method": "recorded by a person; not measured from pixels"},
 "body_size": {"class": "large", "source": "measured" | "recorded",
               "measured": {"class": ..., "relative_height": 1.08, "method": "...", ...},
               "recorded_by": ..., "recorded_at": ...}}    # the last two when a person's class overrides
```

Each writer replaces only its own keys, so rebuilding the antlers keeps the marks and the reverse.
:func:`rebuild` (the ``physical_features`` asset) measures every deer's body size afresh;
:func:`refresh` (after a person records or undoes marks) keeps the stored measurement.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from deer_reid_assets.core.store import marks as store

from . import body_size, vocabulary

RECORDED_METHOD = "recorded by a person; not measured from pixels"


def _when(value) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def build(record: dict | None, measured: dict | None) -> dict:
    """The ``marks`` and ``body_size`` parts of one deer (only those with something in them) from its
    current record (a ``reid_deer_marks`` row, or None) and its measured body size (or None)."""
    out: dict = {}
    after = (record or {}).get("after") or {}
    by = {"recorded_by": record["reviewer"], "recorded_at": _when(record["created_at"])} if record else {}
    marks = vocabulary.as_json(after)
    if marks:
        out["marks"] = {**marks, **by, "source": record["source"], "method": RECORDED_METHOD}
    if after.get("body_size"):
        out["body_size"] = {"class": after["body_size"], "source": "recorded", **by, "measured": measured}
    elif measured:
        out["body_size"] = {"class": measured.get("class"), "source": "measured", "measured": measured}
    return out


def write(conn: sa.Connection, deer_ids: list[str], measured: dict[str, dict]) -> dict[str, dict]:
    """Build and write the parts of ``deer_ids``; deer with nothing to say and nothing stored are not
    touched. Returns the patches written."""
    records = store.current(conn, deer_ids)
    stored = store.stored_features(conn, deer_ids)
    patches = {}
    for deer_id in deer_ids:
        patch = build(records.get(deer_id), measured.get(deer_id))
        if patch or any(k in stored.get(deer_id, {}) for k in store.OWN_KEYS):
            patches[deer_id] = patch
    store.write_features(conn, patches)
    return patches


def refresh(conn: sa.Connection, deer_ids: list[str]) -> dict[str, dict]:
    """Rewrite the parts of ``deer_ids`` from their current records, keeping the stored measurement."""
    stored = store.stored_features(conn, deer_ids)
    measured = {d: m for d, pf in stored.items() if (m := (pf.get("body_size") or {}).get("measured"))}
    return write(conn, deer_ids, measured)


def rebuild(engine: sa.Engine, settings: body_size.SizeSettings | None = None) -> dict:
    """Measure every deer's body size and rewrite every deer's ``marks`` and ``body_size``; a summary
    (counts, the patches, and the per-detection relative heights)."""
    settings = settings or body_size.SizeSettings()
    with engine.begin() as conn:
        boxes = [body_size.Box(**r) for r in store.size_boxes(conn)]
        sexes = store.deer_sexes(conn)
        measured = body_size.measure(boxes, sexes, settings)
        patches = write(conn, sorted(sexes), measured)
    sizes = [p["body_size"] for p in patches.values() if p.get("body_size")]
    return {
        "deer": len(sexes),
        "deer_with_marks": sum("marks" in p for p in patches.values()),
        "body_size_measured": sum(m.get("class") is not None and "relative_height" in m for m in measured.values()),
        "body_size_from_age_class": sum("relative_height" not in m and m.get("class") is not None
                                        for m in measured.values()),
        "body_size_recorded": sum(s["source"] == "recorded" for s in sizes),
        "body_size_classes": {c: sum(s["class"] == c for s in sizes) for c in vocabulary.BODY_SIZE},
        "relative_heights": body_size.relative_heights(boxes, settings.min_peers),
        "boxes": boxes,
        "patches": patches,
    }


def page(conn: sa.Connection, deer_id: str) -> dict:
    """What the deer page shows: the current marks (field -> value), who recorded them and when, a
    line describing them, the stored body size (measured and/or recorded) and the newest records."""
    record = store.current(conn, [deer_id]).get(deer_id)
    stored = store.stored_features(conn, [deer_id]).get(deer_id, {})
    history = [{**r, "line": vocabulary.describe(r["after"] or {})} for r in store.history(conn, deer_id)]
    current = (record or {}).get("after") or {}
    return {"current": current, "line": vocabulary.describe(current), "record": record,
            "body_size": stored.get("body_size"), "history": history,
            "fields": [(f, vocabulary.LABELS[f], vocabulary.FIELDS[f]) for f in vocabulary.FIELDS]}
