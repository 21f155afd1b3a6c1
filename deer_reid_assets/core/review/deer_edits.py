"""Merging two deer and splitting a deer (the deer pages), each one transaction recorded as
corrections (one row per moved detection, sharing an operation id) and undone as a whole by
:func:`deer_reid_assets.core.review.actions.undo_last`.

Each moved detection is a ``reassign`` correction whose ``queue_reason`` is ``merge`` or ``split``.

* merge: every detection of the absorbed deer goes to the kept one (its review fields otherwise
  unchanged); the absorbed deer stays as an empty row whose notes say where it went (other tables
  may point at it; undo brings it back as it was).
* split: the chosen detections of a deer go to a new deer (same sex) and count as reviewed: a person
  said they are not that deer, so each is also a confirmed hard negative for it (``labels``).

Sighting counts follow at once (once live matching is ours); the deer's profiles are rebuilt by Dagster (a sensor watches
:func:`store.deer_edits.edits_marker`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa

from deer_reid_assets.core import coexistence
from deer_reid_assets.core.matching import refresh_sighting_stats
from deer_reid_assets.core.store import deer_edits as edits
from deer_reid_assets.core.store import review as store

from .actions import ReviewError

MERGE, SPLIT = "merge", "split"  # the corrections' queue_reason: each moved detection is a 'reassign'
MERGED_NOTE = "merged into {name} ({deer_id}) in the review app"


def merge_deer(engine: sa.Engine, keep_id: str, absorb_id: str, *, reviewer: str) -> dict:
    """Move every detection of ``absorb_id`` to ``keep_id``. Returns {operation_id, moved}."""
    reviewer = _reviewer(reviewer)
    if not keep_id or not absorb_id or keep_id == absorb_id:
        raise ReviewError("choose two different deer to merge")
    with engine.begin() as conn:
        keep, absorb = edits.deer_row(conn, keep_id, lock=True), edits.deer_row(conn, absorb_id, lock=True)
        if keep is None or absorb is None:
            raise ReviewError(f"no deer {absorb_id if keep else keep_id} to merge")
        moved = edits.detections_of(conn, absorb_id)
        if not moved:
            raise ReviewError(f"deer {absorb['name'] or absorb_id} has no detections to merge")
        operation = str(uuid.uuid4())
        for detection_id in moved:
            before = store.detection_state(conn, detection_id, lock=True)
            after = {**before, "deer_id": keep_id}
            store.write_review_fields(conn, detection_id, after)
            store.insert_correction(conn, detection_id=detection_id, action="reassign", reviewer=reviewer,
                                    queue_reason=MERGE, proposed_deer_id=None, before=before,
                                    after={**after, "merged_deer_id": absorb_id, "merged_deer_notes": absorb["notes"]},
                                    operation_id=operation)
        edits.set_deer_notes(conn, absorb_id, MERGED_NOTE.format(name=keep["name"] or "unnamed", deer_id=keep_id))
        _sightings(conn)
    return {"operation_id": operation, "moved": len(moved)}


def split_deer(engine: sa.Engine, deer_id: str, detection_ids: list[str], *, reviewer: str,
               new_name: str | None = None) -> dict:
    """Move ``detection_ids`` (all of them ``deer_id``'s) to a new deer. Returns {operation_id, moved, deer_id}."""
    reviewer = _reviewer(reviewer)
    chosen = sorted(set(detection_ids))
    with engine.begin() as conn:
        source = edits.deer_row(conn, deer_id, lock=True)
        if source is None:
            raise ReviewError(f"no deer {deer_id} to split")
        own = edits.detections_of(conn, deer_id)
        if not chosen:
            raise ReviewError("choose the detections that go to the new deer")
        strangers = [d for d in chosen if d not in own]
        if strangers:
            raise ReviewError(f"detection {strangers[0]} is not one of {source['name'] or deer_id}'s")
        if len(chosen) == len(own):
            raise ReviewError("a split keeps at least one detection with the deer (rename it instead)")
        name = (new_name or "").strip()[:100] or f"{(source['name'] or 'deer')[:80]}-split"
        created = store.create_deer(conn, name, source["sex"])
        operation, now = str(uuid.uuid4()), datetime.now(UTC).isoformat()
        for detection_id in chosen:
            before = store.detection_state(conn, detection_id, lock=True)
            after = {**before, "deer_id": created, "is_reviewed": True, "is_valid": True,
                     "reviewed_by": reviewer, "reviewed_at": now}
            store.write_review_fields(conn, detection_id, after)
            store.insert_correction(conn, detection_id=detection_id, action="reassign", reviewer=reviewer,
                                    queue_reason=SPLIT, proposed_deer_id=deer_id, before=before,
                                    after={**after, "created_deer_id": created}, operation_id=operation)
        _sightings(conn)
    return {"operation_id": operation, "moved": len(chosen), "deer_id": created}


def undo_operation(conn: sa.Connection, operation_id: str) -> int:
    """Undo every row of one merge or split (inside the caller's transaction); refused when a moved
    detection changed since. Returns how many detections went back."""
    rows = edits.operation_rows(conn, operation_id)
    fields = [k for k in store.REVIEW_FIELDS if k != "reviewed_at"]
    for row in rows:
        now = store.detection_state(conn, row["detection_id"], lock=True)
        if now is not None and any(now[k] != row["after"].get(k) for k in fields):
            raise ReviewError(f"detection {row['detection_id']} changed since that {row['queue_reason']}; not undone")
    created, merged = set(), {}
    for row in rows:
        store.write_review_fields(conn, row["detection_id"], row["before"])
        store.mark_undone(conn, row["id"])
        if row["after"].get("created_deer_id"):
            created.add(row["after"]["created_deer_id"])
        if row["after"].get("merged_deer_id"):
            merged[row["after"]["merged_deer_id"]] = row["after"].get("merged_deer_notes")
    for deer_id in created:
        store.delete_deer_if_unused(conn, deer_id)
    for deer_id, notes in merged.items():
        edits.set_deer_notes(conn, deer_id, notes)
    _sightings(conn)
    return len(rows)


def _sightings(conn: sa.Connection) -> None:
    """The deer's sighting counts follow, unless the existing system's worker owns them (before cut-over)."""
    if coexistence.live_mode(conn).ours:
        refresh_sighting_stats(conn)


def _reviewer(name: str) -> str:
    name = (name or "").strip()[:100]
    if not name:
        raise ReviewError("a reviewer name is required")
    return name
