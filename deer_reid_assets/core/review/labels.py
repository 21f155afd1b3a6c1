"""Corrections become labelled pairs for training (active learning).

From each detection's latest decision (skips and undone ones ignored):

* confirm -> (detection, deer, positive);
* reassign / new deer -> (detection, chosen deer, positive) and, when the matcher had proposed
  another deer, (detection, proposed deer, **hard negative**): the model was confidently wrong there;
* not a deer -> no pair (the detection is marked invalid and leaves training altogether).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from deer_reid_assets.core.store import review as store


@dataclass(frozen=True)
class ReviewPair:
    detection_id: str
    deer_id: str
    positive: bool
    action: str


def review_pairs(conn: sa.Connection) -> list[ReviewPair]:
    """Every labelled pair the corrections give, positives and hard negatives."""
    pairs: list[ReviewPair] = []
    for d in store.latest_decisions(conn):
        final, proposed = d["final_deer_id"], d["proposed_deer_id"]
        if d["action"] == "not_deer" or not final:
            continue
        pairs.append(ReviewPair(d["detection_id"], final, True, d["action"]))
        if proposed and proposed != final:
            pairs.append(ReviewPair(d["detection_id"], proposed, False, d["action"]))
    return pairs


def hard_negatives(conn: sa.Connection) -> dict[str, set[str]]:
    """{deer id: detections confirmed NOT to be it}: what a sampler puts in the same batch as that deer."""
    out: dict[str, set[str]] = {}
    for p in review_pairs(conn):
        if not p.positive:
            out.setdefault(p.deer_id, set()).add(p.detection_id)
    return out


def confused_pairs(conn: sa.Connection) -> list[tuple[str, str]]:
    """(chosen deer, proposed deer) of every confirmed hard negative: the two deer the matcher mixed up."""
    pairs = review_pairs(conn)
    chosen = {p.detection_id: p.deer_id for p in pairs if p.positive}
    return [(chosen[p.detection_id], p.deer_id) for p in pairs if not p.positive]


def confusers(conn: sa.Connection) -> dict[str, list[str]]:
    """{identity: identities it was confused with}, in the training manifest's names and both ways.
    What ``finetuned_reid_model`` hands the P x K sampler, so a confused pair shares batches."""
    pairs = confused_pairs(conn)
    names = store.deer_identities(conn, sorted({d for pair in pairs for d in pair}))
    out: dict[str, set[str]] = {}
    for chosen, proposed in pairs:
        a, b = names.get(chosen), names.get(proposed)
        if a and b and a != b:
            out.setdefault(a, set()).add(b)
            out.setdefault(b, set()).add(a)
    return {k: sorted(v) for k, v in sorted(out.items())}
