"""The machine-readable tail every benchmark prints after its table: one JSON object per figure."""

from __future__ import annotations

import json


def emit(name: str, value: float, unit: str, device: str) -> None:
    """``{"name", "value", "unit", "device"}`` on one line (value rounded to 4 decimals)."""
    print(json.dumps({"name": name, "value": round(float(value), 4), "unit": unit, "device": device}))
