"""Antler seasons from a photo's timestamp.

A white-tailed buck casts his antlers in late winter and grows a new set in velvet over the summer;
the velvet is shed in late summer and the hard antlers are carried through the rut into winter. An
*antler season* is one such set: it starts in April (regrowth) and ends the next March, labelled by
its two years (``2025-26`` runs from April 2025 to March 2026). Within it, the phase by month:

* ``velvet`` April-August: still growing, tines not final;
* ``hard`` September-January: the final configuration, comparable between photos;
* ``shed`` February-March: antlers being cast, a side may be missing.

Only ``hard`` photos of the same season are comparable point for point. The months are a
``SeasonCalendar`` and can be changed for another latitude.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

VELVET, HARD, SHED, UNKNOWN = "velvet", "hard", "shed", "unknown"


@dataclass(frozen=True)
class SeasonCalendar:
    start_month: int = 4  # the month a new set starts to grow
    velvet_months: tuple[int, ...] = (4, 5, 6, 7, 8)
    hard_months: tuple[int, ...] = (9, 10, 11, 12, 1)
    shed_months: tuple[int, ...] = (2, 3)

    def __post_init__(self):
        months = sorted(self.velvet_months + self.hard_months + self.shed_months)
        if months != list(range(1, 13)):
            raise ValueError("velvet, hard and shed months must cover each month 1-12 exactly once")
        if not 1 <= self.start_month <= 12:
            raise ValueError(f"start_month must be 1-12, got {self.start_month}")


DEFAULT_CALENDAR = SeasonCalendar()


@dataclass(frozen=True)
class AntlerSeason:
    label: str  # "2025-26", or "unknown" without a timestamp
    phase: str  # velvet / hard / shed / unknown

    @property
    def comparable(self) -> bool:
        """Hard antlers of a known season: point counts can be compared within the season."""
        return self.phase == HARD and self.label != UNKNOWN


def antler_season(when: datetime | date | None, calendar: SeasonCalendar = DEFAULT_CALENDAR) -> AntlerSeason:
    if when is None:
        return AntlerSeason(UNKNOWN, UNKNOWN)
    start_year = when.year if when.month >= calendar.start_month else when.year - 1
    label = f"{start_year}-{(start_year + 1) % 100:02d}"
    if when.month in calendar.velvet_months:
        phase = VELVET
    elif when.month in calendar.hard_months:
        phase = HARD
    else:
        phase = SHED
    return AntlerSeason(label, phase)
