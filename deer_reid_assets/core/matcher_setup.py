"""Which published models the matcher runs with, and at which threshold: the fine-tuned model once
it is published, else the tuned ensemble, else the baseline."""

from __future__ import annotations

import sqlalchemy as sa

from deer_reid_assets.core import families
from deer_reid_assets.core.embed.versions import published_versions
from deer_reid_assets.core.store import queries


def current_ensemble(engine: sa.Engine) -> tuple[dict[str, float], float | None] | None:
    """({version: weight}, tuned threshold or None) of the newest ensemble search for the published
    multi-scale and EfficientNet versions; None when there is none."""
    with engine.connect() as conn:
        versions = published_versions(conn)
        if not all(f in versions for f in families.ENSEMBLE):
            return None
        a, b = (versions[f] for f in families.ENSEMBLE)
        row = queries.newest_ensemble_search(conn, a, b)
    if row is None:
        return None
    return {a: row.weight, b: round(1.0 - row.weight, 12)}, row.threshold


def matcher_setup(engine: sa.Engine, method: str = "auto", threshold: float = 0.40, *,
                  include_finetuned: bool = True) -> tuple[dict[str, float], float, str]:
    """(models, threshold, method name) the matcher runs with: the published fine-tuned model when
    there is one (it is published only after beating the ensemble), else the tuned ensemble (its
    tuned threshold when it met the false-match budget, else ``threshold``), else the baseline."""
    if method not in ("auto", "finetuned", "ensemble", "baseline"):
        raise ValueError(f"method must be 'auto', 'finetuned', 'ensemble' or 'baseline', got {method!r}")
    with engine.connect() as conn:
        finetuned = published_versions(conn).get(families.FINETUNED)
    if method == "finetuned" and finetuned is None:
        raise ValueError("no published fine-tuned embeddings")
    if finetuned is not None and include_finetuned and method in ("auto", "finetuned"):
        return {finetuned: 1.0}, threshold, "finetuned"
    tuned = current_ensemble(engine) if method != "baseline" else None
    if method == "ensemble" and tuned is None:
        raise ValueError("no ensemble weights for the published multi-scale/EfficientNet versions")
    if tuned is not None:
        models, tuned_threshold = tuned
        return models, tuned_threshold if tuned_threshold is not None else threshold, "ensemble"
    with engine.connect() as conn:
        baseline = published_versions(conn).get(families.BASELINE)
    if baseline is None:
        raise ValueError(f"no published {families.BASELINE} (baseline) embeddings to match with")
    return {baseline: 1.0}, threshold, "baseline"
