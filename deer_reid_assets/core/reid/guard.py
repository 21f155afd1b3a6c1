"""Validation figures of one epoch and the collapse guard.

*Validation* scores rank-1 / mAP with :func:`scores.retrieval_metrics` (the definitions the
evaluation uses everywhere else) of validation queries against a gallery: either a separate gallery
(:func:`gallery_split`, e.g. the training crops of the deer, as profiles are built in use) or, without
one, the validation crops split once per identity into queries and gallery (:func:`validation_split`).

*Collapse diagnostics* per epoch: the mean cosine of same-identity and of different-identity pairs of
validation crops, and the share of the variance carried by the top principal component (near 1: every
crop maps onto one line).

*Verdict* (:func:`verdict`): a run is ``collapsed`` when its best validation rank-1 is not above the
untrained network's (epoch 0), or when the different-identity mean cosine of its best epoch exceeds
``MAX_DIFFERENT_COSINE``; otherwise ``ok``. A collapsed model is never published.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deer_reid_assets.core.evaluation.scores import retrieval_metrics
from deer_reid_assets.core.evaluation.splits import identity_split

MAX_DIFFERENT_COSINE = 0.8
OK, COLLAPSED = "ok", "collapsed"


@dataclass(frozen=True)
class ValidationSplit:
    queries: np.ndarray  # indices into the validation crops
    gallery: np.ndarray
    pairs: np.ndarray | None = None  # the crops the collapse diagnostics look at (None: all)


def gallery_split(n_queries: int, n_gallery: int) -> ValidationSplit:
    """Rows ``[0, n_queries)`` are the queries, the next ``n_gallery`` the gallery; the collapse
    diagnostics look at the queries only (the gallery may be training crops)."""
    queries = np.arange(n_queries, dtype=np.intp)
    return ValidationSplit(queries=queries, gallery=np.arange(n_queries, n_queries + n_gallery, dtype=np.intp),
                           pairs=queries)


def validation_split(identities: Sequence[str], seed: int = 0) -> ValidationSplit:
    """Half of each identity's validation crops as queries, the rest as gallery (at least one)."""
    ids = [f"v{i}" for i in range(len(identities))]
    split = identity_split(ids, list(identities), seed=seed, held_out_fraction=0.0, gallery_fraction=0.5)
    queries = np.sort(np.concatenate([split.val_query, split.test_query]))
    return ValidationSplit(queries=queries, gallery=split.gallery)


def pair_cosines(emb: np.ndarray, identities: Sequence[str]) -> tuple[float, float]:
    """(mean same-identity cosine, mean different-identity cosine) over distinct pairs; nan if none."""
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = unit @ unit.T
    labels = np.asarray(list(identities), dtype=object)
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same, dtype=bool), k=1)
    s, d = sims[same & upper], sims[~same & upper]
    return (float(s.mean()) if s.size else float("nan"), float(d.mean()) if d.size else float("nan"))


def top_component_share(emb: np.ndarray) -> float:
    """Share of the total variance along the first principal component (0 when there is none)."""
    centred = emb - emb.mean(axis=0, keepdims=True)
    if centred.shape[0] < 2:
        return 0.0
    singular = np.linalg.svd(centred.astype(np.float64), compute_uv=False)
    total = float((singular**2).sum())
    return float(singular[0] ** 2 / total) if total > 1e-12 else 1.0


def validation_figures(emb: np.ndarray, identities: Sequence[str], split: ValidationSplit) -> dict[str, float]:
    """val_rank1, val_mAP, same_cosine, different_cosine, top_pc_share of one epoch's embeddings."""
    labels = np.asarray(list(identities), dtype=object)
    retrieval = retrieval_metrics(emb[split.queries], labels[split.queries], emb[split.gallery],
                                          labels[split.gallery])
    rows = np.arange(len(labels)) if split.pairs is None else split.pairs
    same, different = pair_cosines(emb[rows], labels[rows])
    return {"val_rank1": float(retrieval["rank1"]), "val_mAP": float(retrieval["mAP"]), "same_cosine": same,
            "different_cosine": different, "top_pc_share": top_component_share(emb[rows])}


def verdict(untrained: dict[str, Any], best: dict[str, Any]) -> tuple[str, str]:
    """(status, one-line reason) from the epoch-0 figures and those of the best epoch."""
    reasons = []
    if not best["val_rank1"] > untrained["val_rank1"]:
        reasons.append(f"best validation rank-1 {best['val_rank1']:.3f} is not above the untrained network's "
                       f"{untrained['val_rank1']:.3f}")
    if best["different_cosine"] > MAX_DIFFERENT_COSINE:
        reasons.append(f"different deer look alike (mean cosine {best['different_cosine']:.2f} > "
                       f"{MAX_DIFFERENT_COSINE})")
    if reasons:
        return COLLAPSED, "COLLAPSED: " + "; ".join(reasons) + " - this model is not published"
    return OK, (f"learned: validation rank-1 {untrained['val_rank1']:.3f} untrained -> {best['val_rank1']:.3f}, "
                f"mAP {untrained['val_mAP']:.3f} -> {best['val_mAP']:.3f}, different-deer cosine "
                f"{best['different_cosine']:.2f}")
