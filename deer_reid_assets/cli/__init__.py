"""``deer-reid``: a thin command line over the core and Dagster's ``materialize``: parse, call, print.

Every command prints one clear line and exits non-zero on bad input or an unreachable database.
The write commands run the same assets (or the same core functions) the Dagster graph runs.
"""

from deer_reid_assets.cli import (  # noqa: F401 - register the commands
    antlers,
    data,
    database,
    embeddings,
    marks,
    pipeline,
    review,
)
from deer_reid_assets.cli.common import main

__all__ = ["main"]
