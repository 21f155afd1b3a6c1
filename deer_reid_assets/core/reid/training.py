"""The deer-specific re-ID model: one import for its public parts.

config (:class:`TrainConfig`, profiles) -> sampler (:class:`PKSampler`) -> losses (ID, triplet,
sub-center ArcFace) -> network (:class:`ReIDNet`, warm starts) -> data (transforms, embedding) ->
trainer (:func:`train`, the epoch loop with callbacks) -> guard (validation figures, collapse verdict)
-> checkpoints (:func:`load_reid_model`). :mod:`crops_check` is the real-data check on a folder.
"""

from .checkpoints import BEST_CHECKPOINT, LAST_CHECKPOINT, load_reid_model
from .config import TrainConfig
from .data import BatchAugment, embed_images, eval_transform, train_augmentations
from .guard import COLLAPSED, OK
from .losses import LinearHead, SubCenterArcFace, batch_hard_triplet_loss, id_loss
from .network import CHECKPOINT_FORMAT, ReIDNet, build_trunk
from .sampler import PKSampler
from .trainer import EpochLog, TrainResult, train

__all__ = [
    "BEST_CHECKPOINT", "BatchAugment",
    "CHECKPOINT_FORMAT", "COLLAPSED", "LAST_CHECKPOINT", "OK", "EpochLog", "LinearHead", "PKSampler",
    "ReIDNet", "SubCenterArcFace", "TrainConfig", "TrainResult", "batch_hard_triplet_loss", "build_trunk",
    "embed_images", "eval_transform", "id_loss", "load_reid_model", "train", "train_augmentations",
]
