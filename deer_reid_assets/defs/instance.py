"""The Dagster instance on PostgreSQL: DAGSTER_HOME prepared, storage URL exported, GPU pool set."""

import os
import shutil
from pathlib import Path

import dagster as dg

from deer_reid_assets.core.store import db

from .resources import GPU_POOL

REPO_ROOT = Path(__file__).resolve().parents[2]


def prepare_dagster_home(app_url: str, *, write_env_file: bool = True) -> Path:
    """Point DAGSTER_HOME at ``$DEER_REID_HOME/dagster_home`` with the project's dagster.yaml, and
    DAGSTER_PG_URL at the database ``dagster`` beside the application data. Also writes a ``.env``
    into the repository root so plain `dagster dev` / `dagster definitions validate` run there
    find the same instance."""
    home = Path(os.environ.get("DAGSTER_HOME") or db.reid_home() / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    storage_url = db.dagster_storage_url(app_url)
    db.ensure_database(storage_url, db.DAGSTER_DATABASE)
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ["DAGSTER_PG_URL"] = storage_url
    if not write_env_file:
        return home
    env_lines = [
        "# Written by deer-reid (db start / demo / serve): the Dagster instance of this checkout.",
        f"DAGSTER_HOME={home}",
        f"DAGSTER_PG_URL={storage_url}",
        f"DEER_REID_HOME={db.reid_home()}",
    ]
    if os.environ.get("DATABASE_URL"):
        env_lines.append(f"DATABASE_URL={os.environ['DATABASE_URL']}")
    (REPO_ROOT / ".env").write_text("\n".join(env_lines) + "\n")
    return home


def set_gpu_pool_limit(instance: dg.DagsterInstance, limit: int = 1) -> None:
    """Explicitly limit the GPU pool (dagster.yaml's default_limit also gives 1)."""
    instance.event_log_storage.set_concurrency_slots(GPU_POOL, limit)
