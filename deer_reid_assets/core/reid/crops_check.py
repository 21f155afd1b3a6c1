"""The real-data check: train on a folder of labelled crops and score untrained vs trained features
on animals the model never saw.

Layout: ``DIR/<animal>/<photo>.jpg`` (also .jpeg / .png). Animals are split by a seeded hash of their
name: ``holdout`` of them are **held out whole** (test animals); the others' photos are split into
train (85%) and validation (15%, for the epoch loop and the collapse guard). On the test animals
:func:`splits.identity_split` makes a gallery and queries, with a quarter of the test animals left
out of the gallery (unseen animals, whose every assignment is a false match), and :func:`report.evaluate`
gives rank-1 / mAP and the best assignment rate with FMR <= 5%, for the untrained network (the run's
starting weights) and for the trained one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deer_reid_assets.core.evaluation.report import evaluate
from deer_reid_assets.core.evaluation.splits import EvalSplit, identity_split

from .checkpoints import load_reid_model
from .config import TrainConfig
from .data import embed_images
from .network import ReIDNet
from .trainer import EpochLog, TrainResult, train

SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_FMR = 0.05


def _unit(seed: int, kind: str, key: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{kind}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def read_crops(directory: Path, *, max_per_animal: int | None = None, seed: int = 0) -> list[tuple[Path, str]]:
    """``(photo, animal)`` for every image under ``DIR/<animal>/``, sorted; at most ``max_per_animal``
    per animal (a seeded choice). ValueError (one line) when the folder does not fit the layout."""
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"crops folder {root} does not exist")
    items: list[tuple[Path, str]] = []
    for animal in sorted(p for p in root.iterdir() if p.is_dir()):
        photos = sorted(p for p in animal.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if max_per_animal is not None and len(photos) > max_per_animal:
            photos = sorted(photos, key=lambda p: _unit(seed, "photo", str(p.relative_to(root))))[:max_per_animal]
            photos.sort()
        items.extend((photo, animal.name) for photo in photos)
    animals = {a for _, a in items}
    if len(animals) < 4:
        raise ValueError(f"crops folder {root} must hold DIR/<animal>/<photo>.jpg for at least 4 animals; "
                         f"found {len(items)} photos of {len(animals)}")
    return items


@dataclass
class CropsCheck:
    n_train: int
    n_val: int
    n_test: int
    train_animals: int
    test_animals: int
    unseen_in_gallery: int
    untrained: dict[str, Any]  # rank1, mAP, assignment_rate (best at FMR <= 5%, 0 if none), threshold
    trained: dict[str, Any]
    result: TrainResult
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        rows = [("untrained (starting weights)", self.untrained), ("trained", self.trained)]
        lines = ["| features | rank-1 | mAP | assignment rate at FMR <= 5% | threshold |", "| --- | ---: | ---: | ---: | ---: |"]
        for name, fig in rows:
            threshold = "none qualifies" if fig["threshold"] is None else f"{fig['threshold']:.2f}"
            lines.append(f"| {name} | {fig['rank1']:.3f} | {fig['mAP']:.3f} | {fig['assignment_rate']:.3f} | {threshold} |")
        return "\n".join(lines)

    def report(self) -> str:
        """What ``deer-reid train --crops`` prints: the weights, the split, the guard line, the table."""
        return "\n".join([f"weights: {self.result.backbone_weights.get('description', '')}", self.summary(),
                          f"guard: {self.result.guard_message}", *self.notes, "", self.table()])

    def summary(self) -> str:
        return (f"{self.train_animals} animals trained on ({self.n_train} train / {self.n_val} val photos); "
                f"scored on {self.test_animals} held-out animals ({self.n_test} photos), {self.unseen_in_gallery} "
                "of them unseen (no gallery photo)")


def split_animals(items: Sequence[tuple[Path, str]], holdout: float, seed: int) -> dict[str, list[tuple[Path, str]]]:
    """train / val / test lists. The ``max(2, round(holdout * animals))`` animals with the lowest seeded
    hash go whole to test; each other animal with 5+ photos gives ``max(2, 15%)`` of them (by a seeded
    hash) to validation, the rest to training."""
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be in (0, 1); got {holdout}")
    by_animal: dict[str, list[Path]] = {}
    for path, animal in items:
        by_animal.setdefault(animal, []).append(path)
    ranked = sorted(by_animal, key=lambda a: _unit(seed, "animal", a))
    n_test = max(2, round(holdout * len(ranked)))
    if len(ranked) - n_test < 2:
        raise ValueError(f"too few animals ({len(ranked)}) to hold {n_test} out and train on the rest")
    out: dict[str, list[tuple[Path, str]]] = {"train": [], "val": [], "test": []}
    for rank, animal in enumerate(ranked):
        photos = sorted(by_animal[animal], key=lambda p: _unit(seed, "photo", str(p)))
        n_val = 0 if rank < n_test or len(photos) < 5 else max(2, round(0.15 * len(photos)))
        for _i, path in enumerate(sorted(photos)):
            role = "test" if rank < n_test else "val" if path in photos[:n_val] else "train"
            out[role].append((path, animal))
    return out


def _figures(emb: np.ndarray, names: list[str], split: EvalSplit) -> dict[str, Any]:
    report = evaluate(emb, [f"c{i}" for i in range(len(names))], names, None, split, query_set="test",
                              max_false_match_rate=MAX_FMR)
    best = report.best or {}
    return {"rank1": float(report.retrieval["rank1"]), "mAP": float(report.retrieval["mAP"]),
            "assignment_rate": float(best.get("assignment_rate") or 0.0), "threshold": best.get("threshold")}


def run(directory: Path, config: TrainConfig, out_dir: Path, *, holdout: float = 0.3,
        max_per_animal: int | None = None, device: str = "cpu",
        progress: Callable[[EpochLog], None] | None = None) -> CropsCheck:
    """Train on the folder's training animals and score untrained vs trained on the held-out ones."""
    items = read_crops(directory, max_per_animal=max_per_animal, seed=config.seed)
    parts = split_animals(items, holdout, config.seed)
    test_names = [a for _, a in parts["test"]]
    base = identity_split([f"c{i}" for i in range(len(test_names))], test_names, seed=config.seed,
                                  held_out_fraction=0.25, gallery_fraction=0.5)
    split = EvalSplit(gallery=base.gallery, val_query=np.empty(0, dtype=np.intp),
                              test_query=np.sort(np.concatenate([base.val_query, base.test_query])),
                              held_out_identities=base.held_out_identities)
    test_paths = [p for p, _ in parts["test"]]
    untrained_net = ReIDNet(config.backbone_weights, arch=config.arch, last_stride=config.last_stride, seed=config.seed)
    untrained = _figures(embed_images(untrained_net, test_paths, config.image_size, device), test_names, split)
    result = train(parts["train"], parts["val"], config, out_dir, device=device, callbacks=[progress] if progress else ())
    model, _ = load_reid_model(result.checkpoint, device)
    trained = _figures(embed_images(model, test_paths, config.image_size, device), test_names, split)
    return CropsCheck(n_train=len(parts["train"]), n_val=len(parts["val"]), n_test=len(test_paths),
                      train_animals=len({a for _, a in parts["train"]}), test_animals=len(set(test_names)),
                      unseen_in_gallery=len(split.held_out_identities), untrained=untrained, trained=trained,
                      result=result, notes=result.notes)


def run_cli(directory: Path, profile: str, overrides: dict[str, Any], weights: str, device: str,
            max_per_animal: int | None, echo: Callable[[str], None]) -> CropsCheck:
    """``deer-reid train --crops``: the profile ('auto' picks by device) with the overrides, per-epoch
    lines through ``echo``; checkpoints in a temporary folder (the figures are what this check is for)."""
    import tempfile

    from deer_reid_assets.core.embed.device import resolve_device

    dev = resolve_device(device)
    name = profile if profile != "auto" else ("full" if dev.startswith("cuda") else "cpu")
    config = TrainConfig.profile(name, **overrides, backbone_weights=weights)
    echo(f"real-data check: {config.arch} at {config.image_size} px, {config.epochs} epochs, on {dev}")

    def line(log: EpochLog) -> None:
        echo(log.describe(config.epochs, noun="animal"))

    with tempfile.TemporaryDirectory(prefix="deer_reid_crops_check_") as tmp:
        return run(Path(directory), config, Path(tmp), max_per_animal=max_per_animal, device=dev, progress=line)
