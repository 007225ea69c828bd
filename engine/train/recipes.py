"""Training recipes: one declarative table.

``Recipe`` lists every setting the trainer reads, each field with its help text and — where it names something —
the registry its value must come from; ``RECIPES`` holds the complete recipes. The programs derive everything
else from it: each field becomes a command-line option (default: the chosen recipe's value; ``--help`` shows every
recipe's), the resolved values are the typed ``Recipe`` of engine.train.settings.TrainSettings (a settings group: every
field changes the result), and they are saved in ``options.json``.
A new training option is one field here plus the code that uses it.

* ``maic``: the MAIC ECG AI Challenge 2023 entry (Adam 1e-3, L1, StepLR, a checkpoint per epoch, best validation
  MAE, sigmoid head).
* ``lima``: Lima et al. 2021's train.py defaults (400 Hz mV, weighted MSE, ReduceLROnPlateau, best-only model.pth).
* ``modern``: this project's: the MAIC 2023 winner's preprocessing, whole records with random crops and
  augmentation, AdamW + cosine with warm-up, EMA weights, the last epoch (no selection on validation data), and in
  a cross-validated run two BaselineNets (``partners=2``, each its own seed) trained with the baseline recipe
  beside each fold's ECGEfficientNet — three models per fold (two architectures per fold beat two seeds of one at
  the same compute: bench/README.md).
* ``baseline``: the plain baseline the modern recipe is measured against (BaselineNet).
"""
from __future__ import annotations

import dataclasses
import math

from dataloader.augment import Augment
from models.heads import HEAD_KINDS
from models.preprocessing import PRESETS
from models.registry import ARCHITECTURES
from utils.bounds import MAX_TEACHER_VIEWS
from utils.settings import OPTION, Settings, option

from .losses import LOSSES, SAMPLE_WEIGHTS
from .optim import OPTIMIZERS, SCHEDULES

BEST_METRICS = ("valid_mae", "valid_loss", "last")
PARTNERS = tuple(ARCHITECTURES)
CHECKPOINT_KINDS = ("every_epoch", "best", "best_only")


def _setting(help: str, choices=None, default=dataclasses.MISSING, **how):
    """A recipe field: an option whose command-line default is the chosen recipe's value."""
    return option(default, help, choices=choices, **how)


@dataclasses.dataclass(frozen=True)
class Recipe(Settings):
    """Every setting of a training run's optimisation (its model and data options are separate)."""

    TITLE = "recipe (every option defaults to the chosen --recipe's value)"

    preprocessing: str = _setting("preprocessing preset of a new model", tuple(PRESETS))
    loss: str = _setting("loss on the age", tuple(LOSSES))
    sample_weights: str = _setting("per-record loss weights: inverse frequency of each integer age, mean 1 (Lima et "
                                   "al.)", SAMPLE_WEIGHTS)
    scheduler: str = _setting("learning-rate schedule: step/plateau per epoch, cosine per step after "
                              "--warmup_epochs", tuple(SCHEDULES))
    nepoch: int = _setting("epochs")
    best_metric: str = _setting("which epoch best.pt holds: lowest validation MAE or loss, or the last one (no "
                                "selection on the validation split, so out-of-fold estimates stay honest)",
                                BEST_METRICS)
    checkpoints: str = _setting("checkpoints written: one per epoch (the seed), best.pt + last.pt, or the published "
                                "model.pth only", CHECKPOINT_KINDS)
    head: str = _setting("age head of a new model: bounded sigmoid (the mode's ages) or linear", HEAD_KINDS)
    optimizer: str = _setting("optimizer (adamw: decoupled weight decay)", tuple(OPTIMIZERS), "adam")
    lr_initial: float = _setting("learning rate", default=1e-3)
    weight_decay: float = _setting("weight decay", default=0.0)
    batch_size: int = _setting("global batch size, all processes together", default=32)
    seeds: int = _setting("models per fold of a cross-validated run (--folds K > 1; a single split trains one): "
                          "seeds --seed, --seed + 1, …, members fold_<k>_seed_<j>; the out-of-fold age and the "
                          "ensemble average them", default=1)
    partner: str = _setting("a second architecture trained beside each fold's models of a cross-validated run "
                            "(--folds K > 1), with its own recipe except the preprocessing and the recipe options "
                            "given on the command line: members fold_<k>_<arch>; the out-of-fold age and the "
                            "ensemble average every model equally", ("none", *PARTNERS), "none")
    partners: int = _setting("models of --partner per fold, each its own seed: members fold_<k>_<arch> for one, "
                             "fold_<k>_<arch>_<i> for several", default=1)
    warmup_epochs: float = _setting("cosine: linear warm-up epochs", default=0.0)
    decay_epoch: int = _setting("step: epochs between decays", default=20)
    decay_gamma: float = _setting("step: decay factor", default=0.1)
    patience: int = _setting("plateau: epochs without improvement before a decay", default=7)
    lr_factor: float = _setting("plateau: decay factor", default=0.1)
    min_lr: float = _setting("plateau: stop once the learning rate falls below this", default=1e-7)
    max_weight: float = _setting("cap of the inverse-age weights before they are renormalised to mean 1 (so the "
                                 "largest final weight can exceed it, as in Lima et al.'s code)", default=math.inf)
    ema: float = _setting("decay of the exponential moving average of the weights, which is validated and saved "
                          "(0 = off)", default=0.0)
    head_bias_init: str = _setting("start the output layer's bias at the training-mean age, or at random",
                                   ("none", "mean"), "none")
    output_init: str = _setting("start the output layer's weight at zero (the untrained network then predicts its "
                                "bias for every ECG), or as PyTorch initialises it", ("default", "zero"), "default")
    ema_bn: str = _setting("BatchNorm statistics of the EMA weights: copied from the trained weights, or recomputed "
                           "for the EMA weights by one pass over the (augmented) training data each epoch",
                           ("copy", "recompute"), "copy")
    crop_seconds: float = _setting("random training crops of this many seconds (0 = the model's whole input)",
                                   default=0.0)
    aug_scale: float = _setting("amplitude factor U(1 − s, 1 + s) per record (z-scored units, 0 = off)", default=0.0)
    aug_lead_scale: float = _setting("amplitude factor 1 + s·N(0, 1) per lead", default=0.0)
    aug_noise: float = _setting("Gaussian noise standard deviation", default=0.0)
    aug_wander: float = _setting("baseline wander amplitude (0.05–0.5 Hz)", default=0.0)
    aug_lead_dropout: float = _setting("probability of zeroing each lead", default=0.0)
    aug_coarse_dropout: float = _setting("probability of zeroing one 10% segment of a record across all leads",
                                         default=0.0)
    augment_on: str = _setting("where the augmentation after the random crops runs: the loader (numpy, the same "
                               "numbers on every machine) or the training device (batched tensor operations on every "
                               "thread or the GPU, another random stream; stored distillation views stay in the "
                               "loader)", ("loader", "device"), "loader")
    teacher_weight: float = _setting("distillation (--teacher): a training record's target is w × the teacher "
                                     "ensemble's age + (1 − w) × its true age", default=0.7)
    teacher_views: int = _setting("distillation: the teacher scores K stored augmented views of every training "
                                  "record and each epoch the student trains on one of them towards that view's "
                                  "age (consistent teaching; only a view's seed is stored); 0 = one teacher age per "
                                  "record (its whole-record windows) for every fresh augmentation (default with "
                                  "--teacher: 8; without, none)", default=0)

    def __post_init__(self):
        for field in self.declared():
            choices = field.metadata[OPTION].choices
            if choices is not None and getattr(self, field.name) not in choices:
                raise ValueError(f"--{field.name} must be one of {', '.join(choices)}, got "
                                 f"{getattr(self, field.name)!r}")
        inf = math.inf  # a bound that NaN and infinity fail too (every comparison with NaN is false)
        checks = {"batch_size": self.batch_size >= 1, "seeds": self.seeds >= 1, "partners": self.partners >= 1,
                  "nepoch": self.nepoch >= 1, "ema": 0 <= self.ema < 1, "crop_seconds": 0 <= self.crop_seconds < inf,
                  "max_weight": self.max_weight > 0, "lr_initial": 0 < self.lr_initial < inf,
                  "weight_decay": 0 <= self.weight_decay < inf, "warmup_epochs": 0 <= self.warmup_epochs < inf,
                  "decay_epoch": self.decay_epoch >= 1, "decay_gamma": 0 < self.decay_gamma <= 1,
                  "patience": self.patience >= 0, "lr_factor": 0 < self.lr_factor < 1, "min_lr": 0 <= self.min_lr < inf,
                  "aug_scale": 0 <= self.aug_scale < 1, "aug_lead_scale": 0 <= self.aug_lead_scale < inf,
                  "aug_noise": 0 <= self.aug_noise < inf, "aug_wander": 0 <= self.aug_wander < inf,
                  "aug_lead_dropout": 0 <= self.aug_lead_dropout <= 1,
                  "aug_coarse_dropout": 0 <= self.aug_coarse_dropout <= 1,
                  "teacher_weight": 0 <= self.teacher_weight <= 1,
                  "teacher_views": 0 <= self.teacher_views <= MAX_TEACHER_VIEWS}
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            shown = ", ".join(f"--{n} {getattr(self, n)}" for n in wrong)
            raise ValueError(f"out of range: {shown} (nepoch, batch_size, seeds, partners, decay_epoch and lr_initial "
                             f"must be positive, ema, aug_scale and lr_factor in [0, 1) (lr_factor above 0), "
                             f"decay_gamma in (0, 1], teacher_weight and the dropout probabilities in [0, 1], "
                             f"teacher_views at most {MAX_TEACHER_VIEWS}, the others finite and ≥ 0, max_weight > 0)")

    @classmethod
    def parser_default(cls, field: dataclasses.Field):
        """None: the chosen recipe's value (resolved from the recipe table)."""
        return None

    @classmethod
    def argument(cls, field: dataclasses.Field) -> tuple[list[str], dict]:
        """As declared, with 'auto' among the choices and every recipe's value in the help."""
        flags, keywords = super().argument(field)
        values = ", ".join(f"{name} {getattr(recipe, field.name)}" for name, recipe in RECIPES.items())
        keywords["help"] = f"{keywords['help']} ({values})"
        if keywords.get("choices") is not None:
            keywords["choices"] = ("auto", *keywords["choices"])
        return flags, keywords

    def augment(self, fs: float) -> Augment | None:
        """The training augmentation of this recipe at the model's rate ``fs`` (None when every one is off): each
        ``aug_<name>`` field is Augment's ``<name>``."""
        strengths = {f.name[4:]: getattr(self, f.name) for f in dataclasses.fields(self) if f.name.startswith("aug_")}
        settings = Augment(crop_samples=int(round(self.crop_seconds * fs)), fs=fs, **strengths)
        return settings if settings != Augment(fs=fs) else None

    def augment_parts(self, fs: float) -> tuple[Augment | None, Augment | None]:
        """(what the loader applies, what the training device applies) of :meth:`augment` under ``augment_on``."""
        whole = self.augment(fs)
        return (whole, None) if whole is None or self.augment_on == "loader" else whole.split()


# the fields that say how many models a fold of a cross-validated run trains (not how one model is trained)
MODELS_PER_FOLD = ("seeds", "partner", "partners")

_SEED = dict(optimizer="adam", lr_initial=1e-3, weight_decay=0.0, batch_size=32)
RECIPES = {
    "maic": Recipe(preprocessing="maic", loss="l1", sample_weights="none", scheduler="step", nepoch=60,
                   best_metric="valid_mae", checkpoints="every_epoch", head="sigmoid", **_SEED),
    "lima": Recipe(preprocessing="lima", loss="mse", sample_weights="inverse_age", scheduler="plateau", nepoch=70,
                   best_metric="valid_loss", checkpoints="best_only", head="linear", **_SEED),
    # the plain baseline the modern recipe is measured against (BaselineNet; bench/accuracy.py)
    "baseline": Recipe(preprocessing="modern", loss="l1", sample_weights="none", scheduler="onecycle", nepoch=60,
                       best_metric="last", checkpoints="best", head="linear", optimizer="adamw", lr_initial=3e-3,
                       weight_decay=0.05, batch_size=32, ema=0.99, ema_bn="recompute", warmup_epochs=6.0,
                       head_bias_init="mean", output_init="zero", crop_seconds=8.192, aug_lead_scale=0.1,
                       aug_noise=0.05, aug_lead_dropout=0.1, augment_on="device"),
    "modern": Recipe(preprocessing="modern", loss="l1", sample_weights="none", scheduler="cosine", nepoch=40,
                     best_metric="last", checkpoints="best", head="linear", optimizer="adamw", lr_initial=1e-3,
                     weight_decay=0.01, batch_size=32, partner="BaselineNet", partners=2, ema=0.99, warmup_epochs=2.0,
                     head_bias_init="mean", crop_seconds=5.0, aug_scale=0.1, aug_noise=0.05, aug_wander=0.1,
                     aug_lead_dropout=0.1, augment_on="device"),
}

SEED_RECIPES = ("maic", "lima")  # the published systems' recipes, reproduced as they were (the others: this project's)

# shortcuts for common choices (--preset): recipe options set unless given on the command line (a preset's recipe
# also yields to --arch, which brings its own); measured beside the defaults in bench/README.md ("Presets")
TRAINING_PRESETS = {
    # the modern recipe with one network per fold and half its epochs — not the MAIC ResDenseNet that train_interface
    # picks when nothing is named (87 GFLOP per ECG: hours per fold on a CPU, however few its epochs)
    "quick": {"recipe": "modern", "partner": "none", "seeds": 1, "nepoch": 20},
}
