"""The sex rule of matching, shared by the evaluation and (in SQL) by ``core.matching``."""

from __future__ import annotations


def normalise_sex(label: str | None) -> str:
    return "unknown" if label is None else str(label).strip().lower()


def sex_compatible(query_class: str | None, profile_sex: str | None) -> bool:
    """Sex rule (as in the SQL of ``core.matching``): a buck / doe query matches profiles of the
    same sex or 'unknown' (None) sex; any other query class (fawn, unknown, None) matches all."""
    query = normalise_sex(query_class)
    if query not in ("buck", "doe"):
        return True
    return normalise_sex(profile_sex) in (query, "unknown")
