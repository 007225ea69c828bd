"""Optimizers and learning-rate schedules by name: the registries a recipe's ``optimizer`` and ``scheduler`` choose
from (an unknown name is an error, never a silent fallback).

A schedule is stepped at two fixed places of the trainer — ``after_step`` (every optimizer step) and
``after_epoch`` (with the validation loss) — and says when training should stop (``finished``); a new schedule is
one class here and one entry in ``SCHEDULES``. Its state is the wrapped PyTorch scheduler's, so checkpoints keep
their format.
"""
from __future__ import annotations

import math
import warnings

import torch

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def make_optimizer(parameters, recipe) -> torch.optim.Optimizer:
    """``recipe.optimizer`` over ``parameters`` at ``recipe.lr_initial`` with ``recipe.weight_decay`` (decoupled for
    AdamW, L2 for Adam)."""
    return OPTIMIZERS[recipe.optimizer](parameters, lr=recipe.lr_initial, weight_decay=recipe.weight_decay)


class Schedule:
    """Base: a PyTorch scheduler in ``self.scheduler``, stepped by the subclass at its own pace. ``extendable``: a
    run may be resumed with a larger ``nepoch`` (the epoch count does not shape the epochs already trained)."""

    extendable = True

    def __init__(self, optimizer: torch.optim.Optimizer, recipe, steps_per_epoch: int):
        self.optimizer, self.recipe = optimizer, recipe
        self.scheduler = self.build(optimizer, recipe, max(1, steps_per_epoch))

    def build(self, optimizer, recipe, steps_per_epoch: int):
        raise NotImplementedError

    def after_step(self) -> None:
        """After every optimizer step."""

    def after_epoch(self, valid_loss: float) -> None:
        """After every epoch's validation."""

    def finished(self) -> bool:
        """True when training should stop before ``nepoch``."""
        return False

    def replay(self, epochs: int) -> None:
        """Bring a fresh schedule to where ``epochs`` completed epochs left it (a checkpoint without scheduler
        state, such as the seed's)."""

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


class StepSchedule(Schedule):
    """The MAIC seed's StepLR: the rate times ``decay_gamma`` every ``decay_epoch`` epochs."""

    def build(self, optimizer, recipe, steps_per_epoch):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.decay_epoch, gamma=recipe.decay_gamma)

    def after_epoch(self, valid_loss: float) -> None:
        self.scheduler.step()

    def replay(self, epochs: int) -> None:
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
            warnings.simplefilter("ignore")
            for _ in range(epochs):
                self.scheduler.step()


class PlateauSchedule(Schedule):
    """Lima et al.'s ReduceLROnPlateau on the validation loss; as in their code the rate may go one factor below
    ``min_lr``, and training stops once it is below ``min_lr``."""

    def build(self, optimizer, recipe, steps_per_epoch):
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=recipe.patience,
                                                          factor=recipe.lr_factor,
                                                          min_lr=recipe.lr_factor * recipe.min_lr)

    def after_epoch(self, valid_loss: float) -> None:
        self.scheduler.step(valid_loss)

    def finished(self) -> bool:
        return self.optimizer.param_groups[0]["lr"] < self.recipe.min_lr


class CosineSchedule(Schedule):
    """Linear warm-up over ``warmup_epochs``, then cosine decay to 0 at the end of ``nepoch``, stepped per step."""

    extendable = False

    def build(self, optimizer, recipe, steps_per_epoch):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(
            round(recipe.warmup_epochs * steps_per_epoch), recipe.nepoch * steps_per_epoch))

    def after_step(self) -> None:
        self.scheduler.step()


class OneCycleSchedule(Schedule):
    """One cycle per step: up from lr_initial/25 to lr_initial over ``warmup_epochs``, then cosine down to
    lr_initial/25e4 at the end of ``nepoch`` (PyTorch's OneCycleLR)."""

    extendable = False

    def build(self, optimizer, recipe, steps_per_epoch):
        share = min(max(recipe.warmup_epochs / max(recipe.nepoch, 1), 1e-3), 0.999)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr_initial, pct_start=share,
                                                   total_steps=max(1, recipe.nepoch * steps_per_epoch))

    def after_step(self) -> None:
        if self.scheduler.last_epoch + 1 < self.scheduler.total_steps:
            self.scheduler.step()


def cosine_with_warmup(warmup: int, total: int):
    """Learning-rate factor per step: linear from 1/warmup to 1 over ``warmup`` steps, then cosine down to 0."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return factor


SCHEDULES: dict[str, type[Schedule]] = {"step": StepSchedule, "plateau": PlateauSchedule, "cosine": CosineSchedule,
                                         "onecycle": OneCycleSchedule}


def make_schedule(optimizer: torch.optim.Optimizer, recipe, steps_per_epoch: int = 1) -> Schedule:
    return SCHEDULES[recipe.scheduler](optimizer, recipe, steps_per_epoch)
