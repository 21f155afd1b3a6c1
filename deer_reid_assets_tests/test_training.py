"""Training core: P x K sampling, loss terms, ReIDNet, train / resume / checkpoints.

Everything runs on CPU with random ResNet18 weights, 48 px synthetic crops and 2-epoch runs (the
learning, guard and warm-start tests are in test_training_recipe.py)."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from deer_reid_assets.core.reid import guard
from deer_reid_assets.core.reid import training as T

SIZE = 48


def _crop(identity: int, shot: int, size: int = 56) -> Image.Image:
    """A noisy coloured background with an ellipse: colour and position identify the 'deer'."""
    rng = np.random.default_rng([identity, shot])
    base = np.array([(identity * 53) % 256, (identity * 97) % 256, (identity * 151) % 256], dtype=float)
    pixels = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    x0 = 4 + 4 * identity + int(rng.integers(-3, 4))
    ImageDraw.Draw(image).ellipse([x0, 12, x0 + 24, 40], fill=tuple(int(255 - c) for c in base))
    return image


def _items(n_ids: int, per_id: int, first_shot: int = 0) -> list[tuple[Image.Image, str]]:
    return [(_crop(i, first_shot + j), f"deer{i}") for i in range(n_ids) for j in range(per_id)]


TRAIN_ITEMS = _items(6, 4)
VAL_ITEMS = _items(6, 2, first_shot=100)
TINY = T.TrainConfig(epochs=2, image_size=SIZE, arch="resnet18", p=3, k=2, batches_per_epoch=2, warmup_epochs=1,
                     backbone_weights="random", seed=3)


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory) -> T.TrainResult:
    return T.train(TRAIN_ITEMS, VAL_ITEMS, TINY, tmp_path_factory.mktemp("run_a"))


# ------------------------------------------------------------------------------------------- config


def test_config_round_trip_and_validation():
    config = T.TrainConfig.cpu_profile(seed=5)
    assert (config.arch, config.image_size, config.p, config.k, config.seed) == ("resnet18", 80, 8, 4, 5)
    assert not config.flip and config.head == "bnneck" and T.TrainConfig().last_stride == 1
    assert T.TrainConfig.profile("full") == T.TrainConfig() and T.TrainConfig().arch == "resnet50"
    assert T.TrainConfig.from_json(config.to_json()) == config
    assert T.TrainConfig(backbone_weights=Path("/x/y.pt")).backbone_weights == "/x/y.pt"
    for bad in ({"k": 1}, {"p": 1}, {"epochs": 0}, {"image_size": 16}, {"batches_per_epoch": 0}, {"seed": -1},
                {"arch": "vgg"}, {"head": "softmax"}, {"optimizer": "rmsprop"}, {"last_stride": 3},
                {"id_weight": 0, "triplet_weight": 0}, {"label_smoothing": 1.0}):
        with pytest.raises(ValueError):
            T.TrainConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        T.TrainConfig.from_json({**config.to_json(), "bogus": 1})


# ------------------------------------------------------------------------------------------ sampler


def _labels() -> list[str]:
    # a: 6 crops, b: 5, c: 4, d: 2 (fewer than k), e: 1 (excluded), f: 1 (excluded)
    counts = {"a": 6, "b": 5, "c": 4, "d": 2, "e": 1, "f": 1}
    return [name for name, n in counts.items() for _ in range(n)]


def test_pk_sampler_batches_have_p_identities_times_k():
    labels = _labels()
    sampler = T.PKSampler(labels, p=3, k=4, batches=12, seed=0)
    assert sampler.excluded == ["e", "f"]
    assert sampler.identities == ["a", "b", "c", "d"]
    batches = list(sampler)
    assert len(batches) == len(sampler) == 12
    seen = Counter()
    for batch in batches:
        assert len(batch) == 12
        per_identity = Counter(labels[i] for i in batch)
        assert len(per_identity) == 3 and set(per_identity.values()) == {4}
        assert not per_identity.keys() & {"e", "f"}
        for identity in per_identity:
            chosen = [i for i in batch if labels[i] == identity]
            if identity == "d":  # 2 crops for k=4: both used, then repeats
                assert set(chosen) == {i for i, name in enumerate(labels) if name == "d"}
            else:  # enough crops: no repeats
                assert len(set(chosen)) == 4
        seen.update(per_identity.keys())
    assert set(seen) == {"a", "b", "c", "d"}
    assert max(seen.values()) - min(seen.values()) <= 1  # identities cycle evenly


def test_pk_sampler_seeded_per_epoch():
    labels = _labels()
    one, two = T.PKSampler(labels, 2, 2, batches=8, seed=1), T.PKSampler(labels, 2, 2, batches=8, seed=1)
    assert list(one) == list(two) == list(one)  # same seed and epoch: same batches, repeatable
    two.set_epoch(1)
    assert list(two) != list(one)
    assert list(T.PKSampler(labels, 2, 2, batches=8, seed=2)) != list(one)


def test_pk_sampler_small_herds():
    sampler = T.PKSampler(["a"] * 3 + ["b"] * 3 + ["c"], p=8, k=2, seed=0)
    assert sampler.p == 2 and sampler.excluded == ["c"]
    assert len(sampler) == 1  # 6 usable crops // (2 * 2)
    with pytest.raises(ValueError, match="at least 2 identities"):
        T.PKSampler(["a", "a", "b"], p=2, k=2)


# --------------------------------------------------------------------------------------------- loss


def _four_points() -> tuple[torch.Tensor, torch.Tensor]:
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]], requires_grad=True)
    return emb, torch.tensor([0, 0, 1, 1])


def test_batch_hard_loss_by_hand():
    emb, labels = _four_points()
    # pairwise distances: ab=sqrt2, ac=2, ad=sqrt(.8), bc=sqrt2, bd=sqrt(.4), cd=sqrt(3.2)
    ab, ad, bc, bd, cd = math.sqrt(2), math.sqrt(0.8), math.sqrt(2), math.sqrt(0.4), math.sqrt(3.2)
    gaps = [ab - ad, ab - bd, cd - bc, cd - bd]  # hardest positive - hardest negative per anchor a, b, c, d
    expected = sum(max(0.0, g + 0.3) for g in gaps) / 4
    assert expected == pytest.approx(1.008147, abs=1e-6)
    loss = T.batch_hard_triplet_loss(emb, labels, margin=0.3)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    soft = T.batch_hard_triplet_loss(emb, labels, soft=True)
    assert soft.item() == pytest.approx(sum(math.log1p(math.exp(g)) for g in gaps) / 4, abs=1e-5)
    loss.backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0


def test_batch_hard_loss_zero_when_separated_and_skips_anchors():
    a = F.normalize(torch.tensor([[1.0, 0.05], [1.0, -0.05], [-1.0, 0.05], [-1.0, -0.05]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1])
    assert T.batch_hard_triplet_loss(a, labels, margin=0.3).item() == 0.0
    assert T.batch_hard_triplet_loss(a, labels, soft=True).item() > 0  # softplus never reaches 0
    # anchor 2 has no positive: only anchors 0 and 1 count
    emb, _ = _four_points()
    three = torch.tensor([0, 0, 1, 2])
    ab, ad, bd = math.sqrt(2), math.sqrt(0.8), math.sqrt(0.4)
    expected = ((ab - ad + 0.3) + (ab - bd + 0.3)) / 2
    assert T.batch_hard_triplet_loss(emb, three).item() == pytest.approx(expected, abs=1e-5)
    # nobody has a positive: zero, still differentiable
    none = T.batch_hard_triplet_loss(emb, torch.tensor([0, 1, 2, 3]))
    assert none.item() == 0.0 and none.requires_grad


# ------------------------------------------------------------------------------------------- model


def test_reidnet_embeddings_and_transforms():
    model = T.ReIDNet("random", arch="resnet18", seed=0)
    assert model.weights.source == "random" and not model.training and "NOT pretrained" in model.weights.description
    assert not model.neck.bias.requires_grad
    x = torch.stack([T.eval_transform(SIZE)(im) for im, _ in TRAIN_ITEMS[:3]])
    assert x.shape == (3, 3, SIZE, SIZE)
    augmented = T.train_augmentations(SIZE)(TRAIN_ITEMS[0][0])
    assert augmented.shape == (3, SIZE, SIZE) and augmented.dtype == torch.float32
    plain = [T.train_augmentations(SIZE)(TRAIN_ITEMS[0][0]) for _ in range(12)]
    assert all(torch.equal(p, augmented) for p in plain)  # flips off by default
    flipped = [T.train_augmentations(SIZE, flip=True)(TRAIN_ITEMS[0][0]) for _ in range(12)]
    assert all(torch.equal(f, augmented) or torch.equal(f, augmented.flip(-1)) for f in flipped)
    assert any(torch.equal(f, augmented.flip(-1)) for f in flipped) and any(torch.equal(f, augmented) for f in flipped)
    with torch.inference_mode():
        emb = model(x)
    assert emb.shape == (3, 512)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    vectors = T.embed_images(model, [im for im, _ in TRAIN_ITEMS[:5]], SIZE, batch_size=2)
    assert vectors.shape == (5, 512) and vectors.dtype == np.float32
    assert T.embed_images(model, [], SIZE).shape == (0, 512)


def test_a_few_steps_lower_the_loss():
    model = T.ReIDNet("random", arch="resnet18", seed=1).train()
    transform = T.eval_transform(SIZE)
    batch = [TRAIN_ITEMS[i] for i in (0, 1, 4, 5, 8, 9, 12, 13)]
    x = torch.stack([transform(im) for im, _ in batch])
    y = torch.tensor([int(name[4:]) for _, name in batch])
    head = T.LinearHead(model.dim, 6)
    optimizer = torch.optim.Adam([p for p in [*model.parameters(), *head.parameters()] if p.requires_grad], lr=1e-3)

    def step() -> float:
        pre, neck = model.features(x)
        loss = T.batch_hard_triplet_loss(pre, y) + T.id_loss(head(neck, y), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    torch.manual_seed(0)
    before = step()
    for _ in range(4):
        after = step()
    assert before > 0
    assert after < before


# ------------------------------------------------------------------------------------------- train


def test_train_writes_loadable_checkpoints(two_epoch_run, tmp_path):
    result = two_epoch_run
    assert [log.epoch for log in result.history] == [0, 1, 2]  # 0: the untrained network
    assert result.resumed_from is None and not result.stopped_early
    trained = result.history[1:]
    assert 1 <= result.best_epoch <= 2 and result.best_val_mAP == max(log.val_mAP for log in trained)
    frame = result.history_frame()
    assert list(frame.columns) == ["epoch", "loss", "id_loss", "triplet_loss", "val_rank1", "val_mAP", "same_cosine",
                                   "different_cosine", "top_pc_share", "lr", "seconds", "images_per_s"]
    assert len(frame) == 3 and (frame["images_per_s"][1:] > 0).all() and np.isfinite(frame["loss"][1:]).all()
    for log in trained:
        assert log.loss == pytest.approx(log.id_loss + log.triplet_loss, rel=1e-5)
        assert -1 <= log.different_cosine <= 1 and 0 <= log.top_pc_share <= 1
    assert result.status in ("ok", "collapsed") and result.guard()["status"] == result.status
    out = result.checkpoint.parent
    for name in ("best.pt", "last.pt"):
        payload = torch.load(out / name, map_location="cpu", weights_only=True)
        assert payload["config"] == TINY.to_json() and "model" in payload
    last = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2 and {"optimizer", "head", "rng"} <= set(last)
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    assert best["guard"]["status"] == result.status and "head" not in best

    model, config = T.load_reid_model(result.checkpoint)
    assert config == TINY.to_json() and not model.training
    assert model.weights.weights_id.startswith("reid-")
    assert model.checkpoint_info["epoch"] == result.best_epoch
    images = [im for im, _ in VAL_ITEMS]
    first = T.embed_images(model, images, SIZE)
    again, _ = T.load_reid_model(out / "best.pt")
    np.testing.assert_array_equal(first, T.embed_images(again, images, SIZE))
    latest, _ = T.load_reid_model(out / "last.pt")
    assert latest.checkpoint_info["epoch"] == 2
    # the validation mAP of the best checkpoint is reproduced from the loaded model (core.evaluation metrics)
    val_ids = [name for _, name in VAL_ITEMS]
    recomputed = guard.validation_figures(first, val_ids, guard.validation_split(val_ids, TINY.seed))
    assert recomputed["val_mAP"] == pytest.approx(result.best_val_mAP, abs=1e-6)
    # a ReIDNet checkpoint can seed a new run (fine-tuning): same weights, same vectors
    np.testing.assert_array_equal(first, T.embed_images(T.ReIDNet(result.checkpoint), images, SIZE))


def test_train_is_deterministic_and_resumes_exactly(two_epoch_run, tmp_path):
    fresh = T.train(TRAIN_ITEMS, VAL_ITEMS, TINY, tmp_path / "b")
    assert [log.loss for log in fresh.history[1:]] == [log.loss for log in two_epoch_run.history[1:]]
    assert [log.val_mAP for log in fresh.history] == [log.val_mAP for log in two_epoch_run.history]

    out = tmp_path / "c"
    seen: list[int] = []
    first = T.train(TRAIN_ITEMS, VAL_ITEMS, dataclasses.replace(TINY, epochs=1), out,
                    progress=lambda log: seen.append(log.epoch))
    assert len(first.history) == 2 and seen == [1]
    resumed = T.train(TRAIN_ITEMS, VAL_ITEMS, TINY, out, progress=lambda log: seen.append(log.epoch))
    assert resumed.resumed_from == 1 and seen == [1, 2]
    assert [log.epoch for log in resumed.history] == [0, 1, 2]
    # warm-up covers epoch 1 either way, so the resumed run equals the uninterrupted one
    assert [log.loss for log in resumed.history[1:]] == [log.loss for log in two_epoch_run.history[1:]]
    # nothing left to do: returns the state of last.pt
    done = T.train(TRAIN_ITEMS, VAL_ITEMS, TINY, out)
    assert done.resumed_from == 2 and len(done.history) == 3 and not done.stopped_early
    # another config (or data) is refused instead of being mixed into this run
    with pytest.raises(ValueError, match="margin"):
        T.train(TRAIN_ITEMS, VAL_ITEMS, dataclasses.replace(TINY, margin=0.5), out)
    with pytest.raises(ValueError, match="manifest_version"):
        T.train(TRAIN_ITEMS, VAL_ITEMS, TINY, out, manifest_version="v2")


def test_early_stopping_when_nothing_improves(tmp_path):
    # validation: two identities whose two crops are identical images -> mAP 1.0 in every epoch
    a, b = _crop(0, 500), _crop(3, 500)
    val = [(a, "x"), (a, "x"), (b, "y"), (b, "y")]
    config = dataclasses.replace(TINY, epochs=5, lr=0.0, early_stopping_patience=1)
    result = T.train(TRAIN_ITEMS, val, config, tmp_path)
    assert result.stopped_early and len(result.history) < 1 + 5  # stopped before the 5 epochs
    assert result.best_val_mAP == 1.0
    assert all(log.lr == 0.0 for log in result.history)
    # nothing was learned: rank-1 is not above the untrained network's, so the guard says collapsed
    assert result.status == "collapsed" and "not above the untrained" in result.guard_message


def test_train_input_errors(tmp_path):
    with pytest.raises(ValueError, match="val_items"):
        T.train(TRAIN_ITEMS, VAL_ITEMS[::2], TINY, tmp_path)  # one crop per validation identity
    with pytest.raises(ValueError, match="identity"):
        T.train([(TRAIN_ITEMS[0][0], "")], VAL_ITEMS, TINY, tmp_path)
    with pytest.raises(ValueError, match="ReIDNet checkpoint"):
        T.load_reid_model(tmp_path / "missing.pt")


def test_val_every_validates_every_nth_and_the_last_epoch(tmp_path):
    config = dataclasses.replace(TINY, epochs=3, val_every=2)
    lines: list[str] = []
    result = T.train(TRAIN_ITEMS, VAL_ITEMS, config, tmp_path / "v", progress=lambda log: lines.append(log.describe(3)))
    assert [log.epoch for log in result.history] == [0, 1, 2, 3]
    assert [log.validated for log in result.history] == [True, False, True, True]
    assert "not validated" in lines[0] and "val rank-1" in lines[1] and len(lines) == 3
    # the same training steps as validating every epoch: validation touches neither the weights nor the RNG
    every = T.train(TRAIN_ITEMS, VAL_ITEMS, dataclasses.replace(config, val_every=1), tmp_path / "e")
    assert [log.loss for log in result.history[1:]] == [log.loss for log in every.history[1:]]
    assert [result.history[i].val_mAP for i in (0, 2, 3)] == [every.history[i].val_mAP for i in (0, 2, 3)]
    assert result.best_epoch in (0, 2, 3)
    # last.pt holds the last validated epoch; a resumed run picks up from there
    state = torch.load(tmp_path / "v" / T.LAST_CHECKPOINT, weights_only=True)
    assert state["epoch"] == 3
    with pytest.raises(ValueError, match="val_every"):
        dataclasses.replace(TINY, val_every=0)


def test_batch_augment_draws_per_image_and_is_seeded():
    x = torch.stack([T.train_augmentations(SIZE)(im) for im, _ in TRAIN_ITEMS[:16]])
    assert x.shape == (16, 3, SIZE, SIZE) and 0 <= float(x.min()) and float(x.max()) <= 1
    torch.manual_seed(0)
    a = T.BatchAugment(erasing=1.0)(x.clone())
    torch.manual_seed(0)
    b = T.BatchAugment(erasing=1.0)(x.clone())
    assert torch.equal(a, b) and a.shape == x.shape and torch.isfinite(a).all()
    # every image erased (p = 1): a rectangle of exact zeros in each
    assert all(bool((img == 0).all(dim=0).any()) for img in a)
    # per-image draws: the same image repeated gets different results
    same = T.BatchAugment(erasing=0.0)(x[:1].repeat(8, 1, 1, 1))
    assert len({round(float(img.sum()), 3) for img in same}) == 8
