"""Trainer, losses, metrics, checkpoints, distributed helpers and the one atomic-write helper."""
