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


def md_table(frame: pd.DataFrame, floatfmt: str = ".3f") -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False, floatfmt=floatfmt))


def md_image(png: bytes, alt: str) -> dg.MetadataValue:
    """A PNG shown inline in the Dagster UI's metadata panel."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")
