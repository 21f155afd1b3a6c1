"""The existing system's class vocabulary, in one place.

Its detector writes ``detections.classification``: buck / doe / fawn / unknown today (its current
model emits buck / doe / unknown), while older rows carry ``mature`` / ``mid`` / ``young``, the age
classes of a buck. A person's correction (``corrected_classification``) wins over the detector.
Deer profiles have a sex (``deersex``: buck / doe / fawn / unknown). Matching compares a detection
only with profiles of a compatible sex: a buck (any age class) with bucks, a doe with does; fawn and
unknown detections, and profiles of unknown sex, with everything.
"""

from __future__ import annotations

SEXES = ("buck", "doe", "fawn", "unknown")
BUCK_AGE_CLASSES = ("mature", "mid", "young")
CLASSIFICATIONS = SEXES + BUCK_AGE_CLASSES

SEX_OF_CLASS = {**{s: s for s in SEXES}, **{a: "buck" for a in BUCK_AGE_CLASSES}}


def sex_of(classification: str | None) -> str:
    """The sex a detection class stands for ('unknown' for anything not in the vocabulary)."""
    return SEX_OF_CLASS.get((classification or "").strip().lower(), "unknown")


def sql_sex_of(expression: str) -> str:
    """SQL for :func:`sex_of` applied to ``expression`` (a text column or expression)."""
    ages = ", ".join(f"'{a}'" for a in BUCK_AGE_CLASSES)
    known = ", ".join(f"'{s}'" for s in SEXES)
    return (f"(CASE WHEN lower({expression}) IN ({ages}) THEN 'buck' "
            f"WHEN lower({expression}) IN ({known}) THEN lower({expression}) ELSE 'unknown' END)")
