"""The review queue, most useful first.

1. **uncertain** proposals: the top two candidate deer within ``margin`` of each other, or the best
   within ``band`` of the matcher's threshold (either way a coin flip for the matcher); closest
   calls first.
2. **new_animal** candidates: no candidate reaches the threshold (or none exists): the matcher left
   the detection unassigned; least similar first.
3. **audit** samples: confident assignments in a seeded random order (a hash of the detection id),
   so the false-match rate measured on the reviewed ones is an unbiased sample.

Skipped detections go to the end, oldest skip first. Before cut-over (the existing system's worker
owns live matching) the queue is built from this pipeline's proposals (``reid_match_proposals``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

DEFAULT_THRESHOLD = 0.40
TIERS = {"uncertain": 0, "new_animal": 1, "audit": 2}


@dataclass
class QueueItem:
    detection_id: str
    reason: str                      # uncertain / new_animal / audit
    proposed_deer_id: str | None     # what the matcher says (its assignment, else its best candidate)
    candidates: list[dict] = field(default_factory=list)  # [{deer_id, similarity}] best first, at most 3
    margin: float | None = None      # top1 - top2
    threshold: float = DEFAULT_THRESHOLD
    skipped: bool = False
    sort_key: tuple = ()
    current_deer_id: str | None = None  # before cut-over: the existing system's deer (its worker's choice)


def _audit_rank(detection_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{detection_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def classify(row: dict, *, margin: float = 0.05, band: float = 0.05, seed: int = 0) -> QueueItem:
    """One pending detection (a row of ``store.review.pending_detections``) as a queue item."""
    cands = list(row.get("candidates") or [])
    threshold = row.get("threshold")
    threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    top1 = cands[0]["similarity"] if cands else None
    gap = top1 - cands[1]["similarity"] if len(cands) > 1 else None
    proposed = row.get("deer_id") or (cands[0]["deer_id"] if cands else None)
    if top1 is None or (top1 < threshold and abs(top1 - threshold) >= band):
        reason, score = "new_animal", (top1 if top1 is not None else -1.0)
    elif (gap is not None and gap < margin) or abs(top1 - threshold) < band:
        reason, score = "uncertain", min(gap if gap is not None else 1.0, abs(top1 - threshold))
    else:
        reason, score = "audit", _audit_rank(row["detection_id"], seed)
    skipped_at = row.get("skipped_at")
    key = (skipped_at is not None, skipped_at.timestamp() if skipped_at is not None else 0.0, TIERS[reason], score,
           row["detection_id"])
    return QueueItem(detection_id=row["detection_id"], reason=reason, proposed_deer_id=proposed, candidates=cands[:3],
                     margin=gap, threshold=threshold, skipped=skipped_at is not None, sort_key=key,
                     current_deer_id=row.get("current_deer_id"))


def order_queue(rows: list[dict], **kwargs) -> list[QueueItem]:
    """The pending detections as queue items, most useful first."""
    return sorted((classify(r, **kwargs) for r in rows), key=lambda i: i.sort_key)


def pending(conn) -> list[QueueItem]:
    """The queue, most useful first, from what the matcher wrote: its scores once live matching is
    ours, its proposals (``reid_match_proposals``) while the existing system's worker owns it."""
    from deer_reid_assets.core import coexistence
    from deer_reid_assets.core.store import review as store

    live = coexistence.live_mode(conn).ours
    return order_queue(store.pending_detections(conn) if live else store.pending_from_proposals(conn))
