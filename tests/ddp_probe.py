"""Launched by tests/test_distributed.py under torchrun (2 processes, gloo): records what each rank sees and holds.

Writes <out>/rank<r>.json with the dataset rows of this rank's shard in epochs 1 and 2, and checksums of the
parameters after one DistributedDataParallel step and of the whole state after the trainer's buffer broadcast.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from dataloader.dataset import ECGDataset, train_loader
from dataloader.sources import SignalCache
from models.registry import get_model
from utils.runtime import broadcast_buffers, cleanup_distributed, init_distributed, seed_everything


def main(out: Path) -> None:
    rank, world, device = init_distributed(torch.device("cpu"))
    seed_everything(3)
    n = 22
    signals = np.random.default_rng(0).normal(size=(n, 12, 4096)).astype(np.float32)
    data = ECGDataset(SignalCache(Path("."), signals, [str(i) for i in range(n)], {}), np.arange(n),
                      targets=np.linspace(20, 80, n))
    loader = train_loader(data, batch_size=4, seed=3, workers=0, rank=rank, world=world)
    seen = {}
    for epoch in (1, 2):
        loader.sampler.set_epoch(epoch)
        seen[epoch] = [int(i) for batch in loader for i in batch["index"]]
    model = torch.nn.parallel.DistributedDataParallel(get_model("ResNet1d", blocks_dim=[[8, 4096], [8, 1024]]))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = next(iter(loader))
    loss = (model(batch["x"]).squeeze(1) - batch["y"]).abs().mean()
    loss.backward()
    optimizer.step()
    params = {k: float(v.detach().double().sum()) for k, v in model.module.named_parameters()}
    broadcast_buffers(model.module)  # as the trainer does before validating and saving
    state = {k: float(v.double().sum()) for k, v in model.module.state_dict().items()}
    (out / f"rank{rank}.json").write_text(json.dumps({"world": world, "seen": seen, "params": params,
                                                      "state": state}))
    del model, optimizer, loss  # the DDP wrapper holds the process group: release it before the group ends
    cleanup_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
