"""Loss terms of the re-ID recipe and the two classifier heads.

* :func:`batch_hard_triplet_loss` (Hermans et al. 2017) on the pre-BN feature.
* :class:`LinearHead`: the bias-free linear classifier of the BN-neck recipe; its logits go to a
  cross-entropy with label smoothing (:func:`id_loss`).
* :class:`SubCenterArcFace`: cosine logits against ``subcenters`` learned centres per identity (the
  closest one counts), additive angular margin on the true class, scaled (Deng et al. 2020), the head
  of Wildbook's MiewID.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def batch_hard_triplet_loss(
    emb: torch.Tensor, labels: torch.Tensor, margin: float = 0.3, soft: bool = False, *, normalize: bool = False
) -> torch.Tensor:
    """Batch-hard triplet loss on ``(N, D)`` features with Euclidean distances.

    For each anchor, the hardest positive is the farthest other row with its label, the hardest
    negative the closest row with another label; loss = mean over anchors of
    ``relu(d_pos - d_neg + margin)`` (or ``softplus(d_pos - d_neg)`` when ``soft``). ``normalize``
    L2-normalises the rows first. Anchors without a positive or a negative in the batch are skipped;
    if none is left the loss is a zero that still has a gradient.
    """
    if emb.ndim != 2:
        raise ValueError(f"emb must be (N, D); got shape {tuple(emb.shape)}")
    labels = torch.as_tensor(labels, device=emb.device)
    if labels.ndim != 1 or labels.shape[0] != emb.shape[0]:
        raise ValueError(f"labels must be ({emb.shape[0]},); got shape {tuple(labels.shape)}")
    x = F.normalize(emb, dim=1) if normalize else emb
    squared = (x * x).sum(dim=1)
    dist = (squared[:, None] + squared[None, :] - 2.0 * (x @ x.T)).clamp_min(1e-12).sqrt()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    positive = same & ~eye
    negative = ~same
    valid = positive.any(dim=1) & negative.any(dim=1)
    if not bool(valid.any()):
        return emb.sum() * 0.0
    d_pos = torch.where(positive, dist, torch.full_like(dist, -math.inf)).amax(dim=1)
    d_neg = torch.where(negative, dist, torch.full_like(dist, math.inf)).amin(dim=1)
    gap = (d_pos - d_neg)[valid]
    losses = F.softplus(gap) if soft else F.relu(gap + margin)
    return losses.mean()


def id_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.1) -> torch.Tensor:
    """Cross-entropy of ``(N, C)`` logits with label smoothing; labels in ``0..C-1``."""
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"logits must be (N, C) and labels (N,); got {tuple(logits.shape)} and {tuple(labels.shape)}")
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


class LinearHead(nn.Module):
    """Bias-free linear classifier over the BN-neck feature (small normal init, as in BoT)."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 identities; got {n_classes}")
        self.fc = nn.Linear(dim, n_classes, bias=False)
        nn.init.normal_(self.fc.weight, std=0.001)

    def forward(self, feature: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(feature)


class SubCenterArcFace(nn.Module):
    """Sub-center ArcFace logits: ``scale * cos(theta + margin)`` for the true class, ``scale * cos(theta)``
    for the others, where ``cos(theta)`` is the best of ``subcenters`` unit centres per class."""

    def __init__(self, dim: int, n_classes: int, *, subcenters: int = 3, margin: float = 0.3,
                 scale: float = 30.0) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 identities; got {n_classes}")
        self.n_classes, self.subcenters, self.margin, self.scale = n_classes, subcenters, margin, scale
        self.weight = nn.Parameter(torch.empty(n_classes * subcenters, dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, feature: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` cosine to the closest sub-centre of each class."""
        cos = F.normalize(feature.float(), dim=1) @ F.normalize(self.weight, dim=1).T
        return cos.view(-1, self.n_classes, self.subcenters).amax(dim=2)

    def forward(self, feature: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosine(feature)
        if labels is None:
            return cos * self.scale
        theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
        target = torch.cos(theta + self.margin)
        # keep the logit monotone past theta = pi - margin (the usual "easy margin" fallback)
        target = torch.where(theta + self.margin < math.pi, target, cos - self.margin * math.sin(self.margin))
        one_hot = F.one_hot(labels, self.n_classes).bool()
        return torch.where(one_hot, target, cos) * self.scale
