"""The sex rule of matching, shared by the evaluation and (in SQL) by ``core.matching``."""

from __future__ import annotations

from deer_reid_assets.core.classes import sex_of


def normalise_sex(label: str | None) -> str:
    """The sex a class stands for (buck age classes mature / mid / young are buck)."""
    return sex_of(label)


def sex_compatible(query_class: str | None, profile_sex: str | None) -> bool:
    """Sex rule (as in the SQL of ``core.matching``): a buck (any of its age classes mature / mid /
    young) or doe query matches profiles of the same sex or 'unknown' (None) sex; any other query
    class (fawn, unknown, None) matches all."""
    query = normalise_sex(query_class)
    if query not in ("buck", "doe"):
        return True
    return normalise_sex(profile_sex) in (query, "unknown")
