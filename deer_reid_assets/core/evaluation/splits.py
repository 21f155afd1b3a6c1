"""The seeded, identity-aware split of labelled detections into gallery, val and test queries.

Some identities are held out of the gallery entirely (open set: new animals). Every decision is a
hash of (seed, kind, key), so the split of a detection does not move when others are added.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deer_reid_assets.core.vectors import check_length, identity_labels

ROLE_GALLERY = "gallery"
ROLE_VAL_QUERY = "val_query"
ROLE_TEST_QUERY = "test_query"
QUERY_SETS = ("val", "test")


@dataclass(frozen=True, eq=False)
class EvalSplit:
    """Seeded, identity-aware split of labelled detections (indices into the detection arrays)."""

    gallery: np.ndarray
    val_query: np.ndarray
    test_query: np.ndarray
    held_out_identities: tuple[str, ...]  # identities with no gallery item (open set)

    def sizes(self) -> dict[str, int]:
        """Counts per role plus the number of held-out identities."""
        return {
            "n_gallery": int(self.gallery.size),
            "n_val_query": int(self.val_query.size),
            "n_test_query": int(self.test_query.size),
            "n_held_out_identities": len(self.held_out_identities),
        }


def unit_hash(seed: int, kind: str, key: str) -> float:
    """Deterministic uniform value in [0, 1) from (seed, kind, key) via BLAKE2b."""
    digest = hashlib.blake2b(f"{seed}\x1f{kind}\x1f{key}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / float(1 << 53)


def identity_split(
    detection_ids: Sequence[str],
    identities: Sequence[str],
    *,
    seed: int = 0,
    held_out_fraction: float = 0.2,
    gallery_fraction: float = 0.5,
    groups: Sequence[str] | None = None,
) -> EvalSplit:
    """Split labelled detections into gallery / validation queries / test queries.

    ``groups`` (optional, '' = none): detections of one group (a burst of near-identical photos)
    share their ``u``, so a burst is never split between gallery and queries.

    Each identity is held out (open set) when ``hash(seed, identity) < held_out_fraction``; each
    detection gets ``u = hash(seed, detection_id)``. Held-out identities: ``u < 0.5`` -> val query,
    else test query. Kept identities: ``u < gallery_fraction`` -> gallery, else the rest of [0, 1)
    is halved into val / test. A kept identity with no gallery detection gets its lowest-``u``
    detection moved to the gallery (so single-detection identities are gallery-only).

    Adding detections never moves existing ones, with one exception: a detection that was *forced*
    into the gallery goes back to its query role when a new detection of the same identity with a
    lower ``u`` arrives (the identity still has a gallery item).
    """
    ids = identity_labels(detection_ids, "detection_ids")
    labels = identity_labels(identities, "identities")
    check_length(labels, len(ids), "identities", "detection_ids")
    if len(set(ids)) != len(ids):
        raise ValueError("detection_ids must be unique")

    if groups is not None:
        check_length(list(groups), len(ids), "groups", "detection_ids")
    keys = [g if groups is not None and (g := groups[i]) else d for i, d in enumerate(ids)]
    u = np.array([unit_hash(seed, "detection", k) for k in keys], dtype=np.float64)
    return split_by_hash(u, labels, seed=seed, held_out_fraction=held_out_fraction, gallery_fraction=gallery_fraction)


def split_by_hash(u: np.ndarray, labels: Sequence[str], *, seed: int = 0, held_out_fraction: float = 0.2,
                  gallery_fraction: float = 0.5) -> EvalSplit:
    """:func:`identity_split` from each detection's ``u = unit_hash(seed, "detection", key)``
    already computed (a caller reading detections a chunk at a time keeps a float, not the key)."""
    for name, value in (("held_out_fraction", held_out_fraction), ("gallery_fraction", gallery_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1]; got {value}")
    held_out = {
        identity
        for identity in set(labels)
        if unit_hash(seed, "identity", identity) < held_out_fraction
    }
    roles = np.empty(len(labels), dtype=object)
    val_cut = gallery_fraction + (1.0 - gallery_fraction) / 2.0
    by_identity: dict[str, list[int]] = {}
    for i, identity in enumerate(labels):
        by_identity.setdefault(identity, []).append(i)
        if identity in held_out:
            roles[i] = ROLE_VAL_QUERY if u[i] < 0.5 else ROLE_TEST_QUERY
        elif u[i] < gallery_fraction:
            roles[i] = ROLE_GALLERY
        else:
            roles[i] = ROLE_VAL_QUERY if u[i] < val_cut else ROLE_TEST_QUERY
    for identity, members in by_identity.items():
        if identity not in held_out and not any(roles[i] == ROLE_GALLERY for i in members):
            roles[min(members, key=lambda i: u[i])] = ROLE_GALLERY

    def indices(role: str) -> np.ndarray:
        return np.flatnonzero(roles == role).astype(np.intp)

    return EvalSplit(
        gallery=indices(ROLE_GALLERY),
        val_query=indices(ROLE_VAL_QUERY),
        test_query=indices(ROLE_TEST_QUERY),
        held_out_identities=tuple(sorted(held_out)),
    )


def split_roles(split: EvalSplit, n: int) -> np.ndarray:
    """Role ('gallery' / 'val_query' / 'test_query') per detection index ``0..n-1``.

    Raises ValueError unless the split partitions ``range(n)`` exactly.
    """
    roles = np.full(n, None, dtype=object)
    for role, idx in (
        (ROLE_GALLERY, split.gallery),
        (ROLE_VAL_QUERY, split.val_query),
        (ROLE_TEST_QUERY, split.test_query),
    ):
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"split has {role} indices outside range(n={n})")
        if np.any(roles[idx] != None):  # noqa: E711 - elementwise comparison on an object array
            raise ValueError(f"split assigns some {role} indices more than one role")
        roles[idx] = role
    if np.any(roles == None):  # noqa: E711
        raise ValueError(f"split does not cover every index of range(n={n})")
    return roles
