"""What a person does with a queue item, each in one transaction that writes the detection's deer and
the existing system's review fields and a correction row (who, when, before, after); and undo."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from deer_reid_assets.core.marks import records
from deer_reid_assets.core.store import marks as marks_store
from deer_reid_assets.core.store import review as store

ACTIONS = ("confirm", "reassign", "new_deer", "not_deer", "skip")
_SEX_OF_CLASS = {"buck": "buck", "doe": "doe", "fawn": "fawn"}


class ReviewError(ValueError):
    """A review action that cannot be taken; the message is one line meant for a person."""


def apply_action(engine: sa.Engine, detection_id: str, action: str, *, reviewer: str, deer_id: str | None = None,
                 proposed_deer_id: str | None = None, queue_reason: str | None = None,
                 new_deer_name: str | None = None) -> int:
    """Take ``action`` on a detection; returns the correction's id.

    * confirm: the detection is ``proposed_deer_id`` (the matcher's proposal the person saw);
    * reassign: the detection is ``deer_id``, another existing deer;
    * new_deer: a new deer (``new_deer_name``, its sex from the detection's class) is created for it;
    * not_deer: not a deer / a bad crop: ``is_valid`` false, no deer;
    * skip: nothing changes; the queue shows it again later."""
    if action not in ACTIONS:
        raise ReviewError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    reviewer = (reviewer or "").strip()[:100]
    if not reviewer:
        raise ReviewError("a reviewer name is required")
    with engine.begin() as conn:
        before = store.detection_state(conn, detection_id, lock=True)
        if before is None:
            raise ReviewError(f"no detection {detection_id}")
        after = dict(before)
        if action != "skip":
            after.update(is_reviewed=True, reviewed_by=reviewer, reviewed_at=datetime.now(UTC).isoformat())
        if action == "confirm":
            if not proposed_deer_id or not store.deer_exists(conn, proposed_deer_id):
                raise ReviewError(f"detection {detection_id} has no proposed deer to confirm")
            after.update(deer_id=proposed_deer_id, is_valid=True)
        elif action == "reassign":
            if not deer_id or not store.deer_exists(conn, deer_id):
                raise ReviewError(f"no deer {deer_id!r} to reassign detection {detection_id} to")
            after.update(deer_id=deer_id, is_valid=True)
        elif action == "new_deer":
            info = store.detection_info(conn, detection_id) or {}
            sex = _SEX_OF_CLASS.get(info.get("classification") or "", "unknown")
            name = (new_deer_name or "").strip()[:100] or f"deer-{detection_id[:8]}"
            created = store.create_deer(conn, name, sex)
            after.update(deer_id=created, is_valid=True, created_deer_id=created)
        elif action == "not_deer":
            after.update(deer_id=None, is_valid=False, correction_notes="not a deer / bad crop (review app)")
        if action != "skip":
            store.write_review_fields(conn, detection_id, after)
        return store.insert_correction(conn, detection_id=detection_id, action=action, reviewer=reviewer,
                                       queue_reason=queue_reason, proposed_deer_id=proposed_deer_id or None,
                                       before=before, after=after)


def undo_last(engine: sa.Engine, reviewer: str) -> dict | None:
    """Undo the reviewer's newest correction not yet undone (one transaction): the detection gets its
    fields back and a deer the action created is removed (a merge or split: all its detections; a
    deer's marks recorded on its page: the marks it had before).
    Returns that correction, None when there is none. Refused when the detection changed since
    (another person or a later run)."""
    with engine.begin() as conn:
        last = store.last_correction(conn, reviewer)
        marks = marks_store.last_by_reviewer(conn, reviewer)
        if marks is not None and (last is None or marks["created_at"] > last["created_at"]):
            try:  # the newest thing the reviewer did was recording a deer's marks (the deer page)
                return {**records.undo_record(conn, marks), "action": "marks"}
            except records.MarkError as exc:
                raise ReviewError(str(exc)) from None
        if last is None:
            return None
        if last.get("operation_id"):  # a merge or split: all its detections go back together
            from .deer_edits import undo_operation

            last["detections"] = undo_operation(conn, last["operation_id"])
            return last
        now = store.detection_state(conn, last["detection_id"], lock=True)
        fields = [k for k in store.REVIEW_FIELDS if k != "reviewed_at"]  # timestamps: time-zone spelling differs
        if last["action"] != "skip" and now is not None and any(now[k] != last["after"].get(k) for k in fields):
            raise ReviewError(f"detection {last['detection_id']} changed since that {last['action']}; not undone")
        if now is not None and last["action"] != "skip":
            store.write_review_fields(conn, last["detection_id"], last["before"])
        if last["after"].get("created_deer_id"):
            store.delete_deer_if_unused(conn, last["after"]["created_deer_id"])
        store.mark_undone(conn, last["id"])
        return last
