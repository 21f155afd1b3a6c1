"""The training manifest of the deer-specific model: which labelled detection is in which split.

* Source: detections a person labelled (reviewed, valid, with a deer) that have an ok crop; later
  issues add user corrections here.
* Honest evaluation, one split for everything: the stored evaluation split decides. Its *test*
  queries are left out (the before/after report scores the model on them: never trained on, never
  used to pick an epoch); its *val* queries are the manifest's ``val`` split (the same queries the
  ensemble weights are tuned on; the trainer retrieves them from the training crops, as profiles are
  built in use); everything else, the gallery, is ``train``.
* Without the evaluation split (``exclude_eval_queries=False``, or a detection it does not know yet):
  80/10/10 (train/val/test) by a hash of (seed, photo content hash + box): seeded, no detection in
  two splits, stable when detections are added and the same in any database.
* Optionally a fraction of identities is held out whole into test, so a score can also cover animals
  the model never saw.
* Identities with one detection cannot form a positive pair: they are counted and reported.
* Stored as a versioned manifest in the database (``tm-<hash>`` of its items and settings).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

import sqlalchemy as sa

from deer_reid_assets.core.evaluation.protocol import unique_keys
from deer_reid_assets.core.store import training_data as store

SPLITS = ("train", "val", "test")


@dataclass
class Manifest:
    version: str
    items: list[dict] = field(default_factory=list)  # {"detection_id", "identity", "split", "crop"}
    stats: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def split(self, name: str) -> list[tuple[str, str]]:
        """(crop path, identity) pairs of one split."""
        return [(i["crop"], i["identity"]) for i in self.items if i["split"] == name]


def _unit(seed: int, kind: str, key: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{kind}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _labelled_crops(conn: sa.Connection, split_name: str) -> list[tuple[str, str, str, str, str | None]]:
    """(detection id, identity, crop path, split key, evaluation role or None) of each labelled crop."""
    rows = store.labelled_crops(conn, split_name)
    keys = unique_keys([r[3] for r in rows])
    return [(r[0], r[1], r[2], key, r[4]) for r, key in zip(rows, keys)]


def build_manifest(engine: sa.Engine, *, seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                   held_out_identity_fraction: float = 0.0, exclude_eval_queries: bool = True,
                   split_name: str = "default") -> Manifest:
    """Build (and store, if new) the manifest of the current labels."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    if not 0.0 <= held_out_identity_fraction < 1.0:
        raise ValueError(f"held_out_identity_fraction must be in [0, 1), got {held_out_identity_fraction}")
    with engine.connect() as conn:
        rows = _labelled_crops(conn, split_name)
    if exclude_eval_queries:
        rows = [r for r in rows if r[4] != "test_query"]
    if not rows:
        raise ValueError("no labelled detections with crops to train on (label some detections first)")
    items = []
    for detection_id, identity, crop, key, role in rows:
        if held_out_identity_fraction and _unit(seed, "identity", identity) < held_out_identity_fraction:
            split = "test"
        elif exclude_eval_queries and role is not None:
            split = "val" if role == "val_query" else "train"
        else:
            u = _unit(seed, "detection", key)
            split = "train" if u < fractions[0] else "val" if u < fractions[0] + fractions[1] else "test"
        items.append({"detection_id": detection_id, "identity": identity, "split": split, "crop": crop})
    config = {"seed": seed, "fractions": list(fractions), "held_out_identity_fraction": held_out_identity_fraction,
              "exclude_eval_queries": exclude_eval_queries, "split_name": split_name,
              "validation": "evaluation val queries" if exclude_eval_queries else "hash"}
    digest = hashlib.sha256(json.dumps([config, [(i["detection_id"], i["identity"], i["split"]) for i in items]],
                                       sort_keys=True).encode()).hexdigest()
    manifest = Manifest(version=f"tm-{digest[:10]}", items=items, stats=_stats(items), config=config)
    _store(engine, manifest)
    return manifest


def _stats(items: list[dict]) -> dict:
    per_identity = Counter(i["identity"] for i in items)
    train_counts = Counter(i["identity"] for i in items if i["split"] == "train")
    return {
        "identities": len(per_identity),
        "detections": {s: sum(1 for i in items if i["split"] == s) for s in SPLITS},
        "identities_per_split": {s: len({i["identity"] for i in items if i["split"] == s}) for s in SPLITS},
        "single_detection_identities_in_train": sorted(k for k, n in train_counts.items() if n == 1),
        "detections_per_identity_histogram": dict(sorted(Counter(per_identity.values()).items())),
    }


def _store(engine: sa.Engine, manifest: Manifest) -> None:
    with engine.begin() as conn:
        if store.manifest_exists(conn, manifest.version):
            return
        store.insert_manifest(conn, manifest.version, manifest.config, manifest.stats, manifest.items)


def load_manifest(engine: sa.Engine, version: str) -> Manifest:
    with engine.connect() as conn:
        head = store.manifest_head(conn, version)
        if head is None:
            raise ValueError(f"no training manifest {version!r}")
        rows = store.manifest_items(conn, version)
    items = [{"detection_id": r[0], "identity": r[1], "split": r[2], "crop": r[3]} for r in rows]
    return Manifest(version=version, items=items, stats=head.stats, config=head.config)
