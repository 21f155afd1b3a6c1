"""Resources: where the database, the images, the weights and the compute are."""

import functools
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from deer_reid_assets.core.store import db

from .placement import GPU_POOL


@functools.lru_cache(maxsize=8)
def _engine(url: str) -> sa.Engine:
    return db.make_engine(url)


class DatabaseResource(dg.ConfigurableResource):
    """The application database (PostgreSQL + pgvector)."""

    url: Optional[str] = Field(
        default=None,
        description="SQLAlchemy URL; unset = $DATABASE_URL, else the embedded PostgreSQL under $DEER_REID_HOME.",
    )

    def get_engine(self) -> sa.Engine:
        return _engine(db.normalize_url(self.url) if self.url else db.database_url())


class ImageStoreResource(dg.ConfigurableResource):
    """Folders for camera uploads, crops and model artefacts."""

    root: Optional[str] = Field(default=None, description="Store root; unset = $DEER_REID_HOME/store.")
    upload_dir: Optional[str] = Field(default=None, description="Folder cameras write into; unset = <root>/uploads.")
    upload_settle_seconds: float = Field(
        default=3.0, description="A photo is taken once nothing has written to it for this many seconds (its age).")
    upload_max_files_per_tick: int = Field(default=500, description="Photos submitted per sensor evaluation at most.")

    @property
    def root_path(self) -> Path:
        return Path(self.root).resolve() if self.root else db.reid_home() / "store"

    @property
    def uploads(self) -> Path:
        return Path(self.upload_dir).resolve() if self.upload_dir else self.root_path / "uploads"

    @property
    def artifacts(self) -> Path:
        return self.root_path / "artifacts"

    @property
    def reports(self) -> Path:
        return self.root_path / "reports"


class ComputeResource(dg.ConfigurableResource):
    """Where models run. GPU steps also carry the pool `gpu` (limit 1 in the instance)."""

    device: str = Field(default="auto", description="'auto' (cuda when available), 'cuda' or 'cpu'.")
    batch_size: int = Field(default=32, description="Crops per forward pass.")
    loader_workers: Optional[int] = Field(
        default=None, description="Processes that decode and resize crops while the model runs; null: none on a "
        "CPU (the model uses every core), min(8, cores - 1) on a GPU.")
    gpu_pool: str = Field(default=GPU_POOL, description="Concurrency pool of GPU steps.")

    lock_on_cpu: bool = Field(default=False, description="Take the GPU lock even when running on the CPU.")

    def resolve(self) -> str:
        from deer_reid_assets.core.embed.device import resolve_device

        return resolve_device(self.device)

    def exclusive(self, engine: sa.Engine):
        """Context manager: the GPU lock (db.gpu_lock) around GPU work; nothing to hold on a CPU."""
        if self.lock_on_cpu or self.resolve().startswith("cuda"):
            return db.gpu_lock(engine)
        return nullcontext()


class ModelWeightsResource(dg.ConfigurableResource):
    """Which weights the backbones load."""

    weights: str = Field(
        default="auto",
        description="'imagenet' (torchvision / efficientnet_pytorch loaders and caches), 'random' (seeded), "
        "'auto' (imagenet when cached, else random) or a checkpoint path (loaded with weights_only=True).",
    )
    seed: int = Field(default=0, description="Seed of random init and of the projection's sample.")
    image_size: int = Field(default=224, description="Crops are resized to image_size x image_size.")
