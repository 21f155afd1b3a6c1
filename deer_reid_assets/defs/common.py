"""Small helpers shared by the asset modules: owners, progress logging, metadata formatting."""

import base64
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg
import pandas as pd

OWNERS = ["team:deer-reid"]


@contextmanager
def core_errors() -> Iterator[None]:
    """The core's known errors (bad input, nothing published yet) as a one-line dg.Failure."""
    from deer_reid_assets.core.embed.versions import EmbeddingError

    try:
        yield
    except (ValueError, EmbeddingError) as exc:
        raise dg.Failure(str(exc)) from exc


def progress_logger(context: dg.AssetExecutionContext, what: str, every_s: float = 5.0) -> Callable[[int, int], None]:
    """A progress callback for the core's loops that logs at most every ``every_s`` seconds."""
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - last[0] >= every_s:
            last[0] = now
            pct = 100.0 * done / total if total else 100.0
            context.log.info(f"{what}: {done}/{total} ({pct:.0f}%)")

    return report


def sig3(value: float) -> float:
    """``value`` to 3 significant digits (the UI would otherwise show all 17)."""
    return float(f"{value:.3g}")


def figure(value: float) -> dg.MetadataValue:
    """A figure for the UI: a float to 3 significant digits."""
    return dg.MetadataValue.float(sig3(float(value)))


def rate(value: float) -> dg.MetadataValue:
    """A rate for the UI: a percentage to 3 significant digits ('93.9%')."""
    return dg.MetadataValue.text(percent(value))


def percent(value: float) -> str:
    return f"{100 * float(value):.3g}%"


def _cell(value):
    if isinstance(value, float) and value == value and abs(value) not in (float("inf"),):
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return value


def md_table(frame: pd.DataFrame) -> dg.MetadataValue:
    """A markdown table, every float to 3 significant digits (a learning rate of 2e-05 stays 2e-05)."""
    shown = frame.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]) or shown[column].dtype == object:
            shown[column] = shown[column].map(_cell)
    return dg.MetadataValue.md(shown.to_markdown(index=False, disable_numparse=True))


def md_image(png: bytes, alt: str) -> dg.MetadataValue:
    """A PNG shown inline in the Dagster UI's metadata panel."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")
