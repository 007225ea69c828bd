"""torch Dataset/DataLoader over cached (or on-the-fly preprocessed) records.

Batches are fetched whole (``__getitems__``): the rows of a batch are read from the memory-mapped cache in one
sorted fancy-index, which is far cheaper than per-item reads and keeps the loader off the model's critical path.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from models.schema import UNKNOWN_SEX
from utils.machine import usable_cores

from .augment import Augment, stored_views
from .labels import sex_codes  # noqa: F401 - the dataset's sex input, defined with the label rules


class ECGDataset(Dataset):
    """Rows of a source (a SignalCache, or an OnTheFly reader + specs) with optional targets, weights and sex codes.
    With one window per record — training, plain inference — a row is the record's position in its reader.
    ``augment`` (training only) transforms each batch with a generator seeded by ``seed`` and the batch's rows, so
    an epoch's augmentations are reproducible (an interrupted run resumes identically) and differ between epochs
    (the sampler reshuffles the batches). ``device_seed``: each batch also carries ``augment_seed``, one number
    from the same generator, which seeds the rest of its augmentation on the training device."""

    def __init__(self, source, rows, targets=None, weights=None, sex=None, augment=None, seed: int = 0,
                 device_seed: bool = False):
        self.source = source
        self.positions = np.asarray(rows, dtype=np.int64)
        n = len(self.positions)
        self.targets = np.zeros(n, np.float32) if targets is None else np.asarray(targets, np.float32)
        self.weights = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)
        self.sex = np.full(n, UNKNOWN_SEX, np.float32) if sex is None else np.asarray(sex, np.float32)
        if not (len(self.targets) == len(self.weights) == len(self.sex) == n):
            raise ValueError("rows, targets, weights and sex must have the same length")
        self.augment, self.seed, self.device_seed = augment, seed, device_seed

    def __len__(self) -> int:
        return len(self.positions)

    def __getitems__(self, indices) -> dict:
        indices = np.asarray(indices, dtype=np.int64)
        x = self.source.read(self.positions[indices])
        drawn = self.augment is not None or self.device_seed
        rng = np.random.default_rng([self.seed, *indices.tolist()]) if drawn else None
        if self.augment is not None:
            x = self.augment(x, rng)
        batch = {"x": torch.from_numpy(x), "y": torch.from_numpy(self.targets[indices]),
                 "w": torch.from_numpy(self.weights[indices]), "sex": torch.from_numpy(self.sex[indices]),
                 "index": torch.from_numpy(indices)}
        if self.device_seed:
            batch["augment_seed"] = torch.tensor(int(rng.integers(0, 2 ** 63 - 1)))
        return batch

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])


class ViewDataset(ECGDataset):
    """Rows on ``views`` stored augmented views per record (distillation's consistent teaching): view v of the record
    at position p is :func:`~dataloader.augment.stored_views` with ``view_seed``, and ``targets`` (n, views) holds
    each view's target. Each batch draws one view per row from a generator seeded like ECGDataset's augmentation (by
    ``seed`` and the batch's rows, so epochs differ and a resumed run repeats them); ``fixed`` (n,) pins row i to
    view ``fixed[i]`` instead (the teacher's pass over every view)."""

    def __init__(self, source, rows, views: int, augment: Augment, view_seed: int, targets=None, weights=None,
                 sex=None, seed: int = 0, fixed=None):
        n = len(rows)
        targets = None if targets is None else np.asarray(targets, np.float32)  # None: no targets (memory ∝ rows)
        if views < 1 or (targets is not None and targets.shape != (n, views)):
            raise ValueError(f"targets must be (rows, views) = ({n}, {views}), got {targets.shape}")
        super().__init__(source, rows, np.zeros(n, np.float32), weights, sex, augment, seed)
        self.views, self.view_seed, self.view_targets = views, view_seed, targets
        self.fixed = None if fixed is None else np.asarray(fixed, dtype=np.int64)

    def __getitems__(self, indices) -> dict:
        indices = np.asarray(indices, dtype=np.int64)
        positions = self.positions[indices]
        chosen = self.fixed[indices] if self.fixed is not None else \
            np.random.default_rng([self.seed, *indices.tolist()]).integers(0, self.views, len(indices))
        x = stored_views(self.augment, self.source.read(positions), self.view_seed, positions, chosen)
        y = np.zeros(len(indices), np.float32) if self.view_targets is None else self.view_targets[indices, chosen]
        return {"x": torch.from_numpy(x), "y": torch.from_numpy(y),
                "w": torch.from_numpy(self.weights[indices]), "sex": torch.from_numpy(self.sex[indices]),
                "index": torch.from_numpy(indices)}


def _pass_through(batch):
    return batch


def default_workers(device: torch.device, cached: bool, world_size: int = 1) -> int:
    """Cached batches are a memcpy: on CPU a worker would only steal cores from the model. On CUDA, or when
    preprocessing runs in the loader, a few workers hide the loading behind the step."""
    cpus = usable_cores()
    if device.type == "cpu":
        return 0 if cached else max(0, min(2, cpus - 1))
    return max(1, min(4 if cached else 8, cpus // max(1, world_size) - 1))


def train_loader(dataset: ECGDataset, batch_size: int, seed: int, workers: int, rank: int = 0, world: int = 1,
                 pin: bool = False) -> DataLoader:
    """Shuffled, a different permutation every epoch (``loader.sampler.set_epoch``), a disjoint shard per rank.
    The last partial batch is dropped as in the seed (unless the set is smaller than one batch)."""
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    per_rank = max(1, batch_size // world)
    drop_last = len(dataset) // world > per_rank
    return DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=drop_last, num_workers=workers,
                      collate_fn=_pass_through, pin_memory=pin, persistent_workers=workers > 0)


class _Shard(torch.utils.data.Sampler):
    def __init__(self, indices):
        self.indices = list(indices)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def eval_loader(dataset: ECGDataset, batch_size: int, workers: int, rank: int = 0, world: int = 1,
                pin: bool = False) -> DataLoader:
    """In order, every row exactly once across ranks (contiguous shards, no padding duplicates, no dropping)."""
    shard = np.array_split(np.arange(len(dataset)), world)[rank]
    return DataLoader(dataset, batch_size=batch_size, sampler=_Shard(shard), num_workers=workers,
                      collate_fn=_pass_through, pin_memory=pin)
