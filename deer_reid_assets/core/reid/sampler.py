"""P x K batches for metric learning: P identities x K crops each (a DataLoader ``batch_sampler``).

Hard negatives from a person's corrections plug in through ``confusers``: pairs of identities the
matcher mixed up (``core.review.labels.confusers``). When an identity is drawn, one of its confusers
(if usable and not in the batch yet) is drawn right after it, so batch-hard mining sees the pair side
by side; an identity with a confuser drawn into a batch's last slot opens the next batch instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from torch.utils.data import Sampler


class PKSampler(Sampler[list[int]]):
    """Batches of P identities x K indices each (a ``batch_sampler`` for a DataLoader).

    Identities are taken in a shuffled order, cycling through all of them before any repeats, and are
    distinct within a batch. An identity with at least K crops gives K distinct ones; one with fewer
    (but at least 2) gives all its crops plus random repeats (sampling with replacement). Identities
    with a single crop are excluded (``excluded``, sorted). If fewer than P identities are usable,
    ``p`` becomes their number. Batches depend only on ``(seed, epoch)``: call :meth:`set_epoch`
    before iterating; iterating twice at the same epoch gives the same batches.
    """

    def __init__(self, labels: Sequence[str], p: int, k: int, *, batches: int | None = None, seed: int = 0,
                 confusers: Mapping[str, Sequence[str]] | None = None) -> None:
        if p < 2 or k < 2:
            raise ValueError(f"PKSampler needs p >= 2 and k >= 2; got p={p}, k={k}")
        if batches is not None and batches < 1:
            raise ValueError(f"batches must be None or at least 1; got {batches}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0; got {seed}")
        groups: dict[str, list[int]] = {}
        for index, label in enumerate(labels):
            groups.setdefault(label, []).append(index)
        self.identities: list[str] = sorted(label for label, idx in groups.items() if len(idx) >= 2)
        self.excluded: list[str] = sorted(label for label, idx in groups.items() if len(idx) < 2)
        if len(self.identities) < 2:
            raise ValueError(
                f"PKSampler needs at least 2 identities with 2 or more crops; got {len(self.identities)} "
                f"({len(self.excluded)} single-crop identities excluded)"
            )
        self.requested_p = p
        self.p = min(p, len(self.identities))
        self.k = k
        self._groups = [np.asarray(groups[label], dtype=np.int64) for label in self.identities]
        self.n_usable = int(sum(g.size for g in self._groups))
        self.batches = batches if batches is not None else max(1, self.n_usable // (self.p * self.k))
        self.seed = seed
        self.epoch = 0
        position = {label: i for i, label in enumerate(self.identities)}
        self._confusers: dict[int, list[int]] = {}
        for label, others in (confusers or {}).items():
            if label in position:
                usable = sorted({position[o] for o in others if o in position and o != label})
                if usable:
                    self._confusers[position[label]] = usable

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0; got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        pool: list[int] = []
        for _ in range(self.batches):
            chosen: list[int] = []
            deferred: list[int] = []
            patience = len(self._groups)  # last-slot deferrals allowed in this batch
            while len(chosen) < self.p:
                if not pool:
                    pool = rng.permutation(len(self._groups)).tolist()
                identity = pool.pop()
                if identity in chosen:
                    deferred.append(identity)
                    continue
                partners = [c for c in self._confusers.get(identity, []) if c not in chosen]
                if partners and len(chosen) == self.p - 1 and patience > 0:
                    patience -= 1  # no room for its hard negative: it opens the next batch instead
                    deferred.append(identity)
                    continue
                chosen.append(identity)
                if partners and len(chosen) < self.p:
                    chosen.append(int(rng.choice(partners)))  # a hard negative from the corrections
            pool.extend(reversed(list(dict.fromkeys(deferred))))  # they come out first next time
            batch: list[int] = []
            for identity in chosen:
                items = self._groups[identity]
                if items.size >= self.k:
                    picked = rng.choice(items, size=self.k, replace=False)
                else:
                    extra = rng.choice(items, size=self.k - items.size, replace=True)
                    picked = np.concatenate([rng.permutation(items), extra])
                batch.extend(int(i) for i in picked)
            yield batch
