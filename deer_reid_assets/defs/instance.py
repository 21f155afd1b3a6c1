"""The Dagster instance on PostgreSQL: DAGSTER_HOME prepared, storage URL exported, GPU pool set."""

import os
import shutil
from pathlib import Path

import dagster as dg

from deer_reid_assets.core.store import db

from .resources import GPU_POOL

REPO_ROOT = Path(__file__).resolve().parents[2]


INSTANCE_TEMPLATE = REPO_ROOT / "deploy" / "dagster.yaml"
_OURS = ("DAGSTER_HOME=", "DAGSTER_PG_URL=")


def prepare_dagster_home(app_url: str, *, write_env_file: bool = True, env_file: Path | None = None) -> Path:
    """Point DAGSTER_HOME at ``$DEER_REID_HOME/dagster_home`` with the project's instance file
    (``deploy/dagster.yaml``) and DAGSTER_PG_URL at the database ``dagster`` beside the application
    data, in THIS process's environment (and its children's). The repository's ``.env`` gets only
    ``DEER_REID_HOME`` (and ``DATABASE_URL``): a Dagster URL there would outlive the embedded server
    and break plain ``dagster`` commands once it stops (they use a temporary SQLite instance)."""
    home = Path(os.environ.get("DAGSTER_HOME") or db.reid_home() / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(INSTANCE_TEMPLATE, home / "dagster.yaml")
    storage_url = db.dagster_storage_url(app_url)
    db.ensure_database(storage_url, db.DAGSTER_DATABASE)
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ["DAGSTER_PG_URL"] = storage_url
    if write_env_file:
        env_lines = [
            "# Written by deer-reid (db start / demo / serve). Plain `dagster` commands here use a temporary",
            "# SQLite instance (dagster.yaml); `deer-reid serve` uses the PostgreSQL one.",
            f"DEER_REID_HOME={db.reid_home()}",
        ]
        if os.environ.get("DATABASE_URL"):
            env_lines.append(f"DATABASE_URL={os.environ['DATABASE_URL']}")
        (env_file or REPO_ROOT / ".env").write_text("\n".join(env_lines) + "\n")
    return home


def forget_stale_instance(env_file: Path | None = None) -> bool:
    """Remove the DAGSTER_HOME / DAGSTER_PG_URL lines earlier versions wrote into ``.env``; True if any."""
    env_file = env_file or REPO_ROOT / ".env"
    if not env_file.is_file():
        return False
    lines = env_file.read_text().splitlines()
    kept = [line for line in lines if not line.strip().startswith(_OURS)]
    if kept != lines:
        env_file.write_text("\n".join(kept) + "\n")
    return kept != lines


def set_gpu_pool_limit(instance: dg.DagsterInstance, limit: int = 1) -> None:
    """Explicitly limit the GPU pool (dagster.yaml's default_limit also gives 1)."""
    instance.event_log_storage.set_concurrency_slots(GPU_POOL, limit)
