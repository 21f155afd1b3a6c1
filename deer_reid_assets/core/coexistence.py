"""Living beside the existing system's worker, then taking over live matching (``deer-reid cutover``).

* Until cut-over (``reid_live_matching.owner = 'existing_system'``, set by ``db migrate --adopt``) the
  worker owns what it reads and writes: the deer table's vectors and ``embedding_version``,
  ``detections.deer_id``, ``reid_similarity_scores`` and the deer's sighting statistics. This
  pipeline keeps its profiles in ``reid_deer_profiles`` and its matcher writes *proposals*
  (``reid_match_proposals``), nothing else.
* ``cutover`` keeps every deer's vectors and every detection's deer, mirrors the published profiles
  onto the deer columns, applies the latest proposals and hands live matching to this pipeline.
  ``cutover --undo`` puts back what was kept.
* Reviewed (and manual) assignments are never changed. The worker's automatic assignments (an
  unreviewed ``deer_id`` this pipeline did not write) change only with ``reassign``.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from deer_reid_assets.core.store import coexistence as store
from deer_reid_assets.core.store.coexistence import adopted, proposed_only, record_proposals  # noqa: F401 - public names

EXISTING, OURS = "existing_system", "deer_reid"


@dataclass(frozen=True)
class LiveMode:
    owner: str
    reassign: bool

    @property
    def ours(self) -> bool:
        return self.owner == OURS


def live_mode(conn: sa.Connection) -> LiveMode:
    row = store.live_matching_row(conn)
    return LiveMode(row.owner, row.reassign) if row else LiveMode(OURS, False)


def hand_to_existing_system(conn: sa.Connection) -> None:
    store.set_owner(conn, EXISTING, False)


def protected_detections(conn: sa.Connection) -> set[str]:
    """Unreviewed detections whose deer the worker chose (not this pipeline's last write); none on a
    stand-alone install."""
    if not adopted(conn):
        return set()
    return store.worker_assigned(conn)


@dataclass
class CutoverReport:
    cutover_id: int
    deer_kept: int
    profiles_mirrored: int
    assignments_written: int
    kept_worker_assignments: int


def cutover(engine: sa.Engine, *, reassign: bool = False) -> CutoverReport:
    """Hand live matching to this pipeline, keeping what it replaces; one transaction."""
    from deer_reid_assets.core import families, matching
    from deer_reid_assets.core.embed.versions import published_version

    with engine.begin() as conn:
        store.lock_live_matching(conn)
        if live_mode(conn).ours:
            raise ValueError("live matching is already this pipeline's (undo with `deer-reid cutover --undo`)")
        protected = set() if reassign else protected_detections(conn)
        cut = store.insert_cutover(conn, reassign)
        kept = store.keep_deer(conn, cut)
        store.keep_assignments(conn, cut)
        store.set_owner(conn, OURS, reassign)
        versions = {f: v for f in families.FAMILIES if (v := published_version(conn, f)) is not None}
        if versions:
            matching._mirror(conn, versions)
        mirrored = store.profiles_of(conn, list(versions.values()))
        latest = store.latest_proposals(conn)
        changes = [(det, new) for det, new in latest if det not in protected]
        current = store.assignments(conn)
        changes = [(det, new) for det, new in changes if current.get(det) != new]
        matching._apply(conn, changes)
        matching.refresh_sighting_stats(conn)
    return CutoverReport(cut, kept, mirrored, len(changes), len(protected))


def undo_cutover(engine: sa.Engine) -> int:
    """Put back the deer vectors and the assignments the last cut-over kept (detections a person has
    reviewed since keep the person's decision); live matching goes back to the existing system.
    Returns how many detections were put back."""
    from deer_reid_assets.core import matching

    with engine.begin() as conn:
        store.lock_live_matching(conn)
        cut = store.open_cutover(conn)
        if cut is None or not live_mode(conn).ours:
            raise ValueError("there is no cut-over to undo")
        store.restore_deer(conn, cut)
        restored = store.restore_assignments(conn, cut)
        store.mark_undone(conn, cut)
        hand_to_existing_system(conn)
        matching.refresh_sighting_stats(conn)
    return restored
