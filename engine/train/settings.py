"""A training run's settings: the options of train_interface.py resolved (``resolve``), typed (``TrainSettings``,
in groups each defined beside the code that reads it) and checked (``check_settings``), and what of them a run's
manifest records (``TrainSettings.result_options``).

``GROUPS`` are the settings groups a training run reads, in the order ``--help`` shows them; every option is a
field of exactly one of them (its flag, help, type, choices and default declared there, once).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from dataloader.formats import InputSettings
from dataloader.maic import MaicTrainingData, label_csv, train_folder
from dataloader.records import fingerprint_files
from dataloader.sources import CacheOptions, resolve_cache_dtype
from dataloader.splits import SplitSettings
from engine.runs import input_name, run_dir, run_members
from models.build import ModelSettings, sigmoid_bounds
from models.files import resolve_weights
from models.registry import MODELS, accepts_sex, architecture_of_recipe, default_recipe
from models.schema import MAIC_MODES
from utils.bounds import MAX_SEED, MAX_STEPS
from utils.errors import UserError
from utils.io import json_ready
from utils.paths import LOG_DIR, default_data_root
from utils.settings import RuntimeSettings, Settings, option, runtime, whole_number

from . import ensemble
from .optim import SCHEDULES
from .recipes import RECIPES, TRAINING_PRESETS, Recipe


@dataclasses.dataclass(frozen=True)
class RunSettings(Settings):
    """The experiment: its recipe's name, folds, seed, steps, where its folder is, where it starts from, and what
    to do with an earlier run and with bad records."""

    TITLE = "training"

    recipe: str = option("auto", "training recipe; auto = lima for ResNet1d, modern for ECGEfficientNet, maic "
                                 "otherwise", choices=("auto", *RECIPES))
    folds: int = option(1, "K > 1: train K models on K patient-level folds (age-stratified where there are no "
                           "patient ids, as MAIC), each validated on its held-out fold; writes oof.csv and cv.json and "
                           "the fold models in fold_<k>/ (test_interface --weights RUN_DIR averages them)")
    seed: int = option(1234, "random seed (initialisation, batch order, augmentation)",
                       type=whole_number(0, MAX_SEED, "a random seed"))
    max_steps_per_epoch: int = option(0, "cap train steps per epoch (0 = all)",
                                      type=whole_number(0, MAX_STEPS, "steps per epoch"))
    pretrained: bool = option(False, "start from --pretrain_model_path (weights, optimizer and epoch when present)")
    teacher: list | None = option(None, "distil: train one network (ECGEfficientNet, modern recipe, unless "
                                        "--arch/--recipe say otherwise) towards the age these models give (anything "
                                        "--weights takes; a K-fold run with --folds K: fold k's student learns from "
                                        "fold k's teachers only, on the same folds)", nargs="+", metavar="RUN")
    preset: str = runtime("none", "shortcut for common choices, each option unless given: quick = the modern recipe "
                                  "(unless --arch or --recipe names another) with one network per fold (--partner "
                                  "none --seeds 1) and --nepoch 20 (its accuracy and time beside the default's: "
                                  "bench/README.md)", choices=("none", *TRAINING_PRESETS))
    recipe_given: tuple = ()  # the recipe options given on the command line (what a partner keeps): resolved
    env: str | None = runtime(None, "run name: outputs go to <log_dir>/<arch>_<env>/ (default: the MAIC mode, or the "
                                    "name of --input)")
    log_dir: str = runtime(str(LOG_DIR), "where run folders are")
    pretrain_model_path: str | None = runtime(None, "the checkpoint --pretrained starts from")
    resume: bool = runtime(False, "continue this run from its last complete epoch; refused (naming each difference) "
                                  "unless every option that changes the result, the data and the split are the "
                                  "run's own")
    overwrite: bool = runtime(False, "start afresh in a run folder that holds an earlier experiment: its "
                                     "checkpoints, histories, fold members and out-of-fold results are removed first "
                                     "(without it such a run is refused)")
    on_bad: str = runtime("error", "bad records: stop and list them (exit 2), or skip them", choices=("error", "skip"))


# the groups a training run reads, in --help's order
GROUPS = (MaicTrainingData, InputSettings, SplitSettings, ModelSettings, Recipe, RunSettings, RuntimeSettings,
          CacheOptions)


def runtime_options() -> frozenset[str]:
    """The training options that do not change a run's result (a resumed run may change them): each group's
    runtime fields."""
    return frozenset().union(*(group.runtime_names() for group in GROUPS))


def absent_values() -> dict:
    """Result-changing option → the value of a run whose manifest predates it (see utils.settings)."""
    return json_ready({k: v for group in GROUPS for k, v in group.absent_values().items()})


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Everything a training run reads, typed; ``options``: the resolved command line (provenance only)."""

    data: InputSettings
    maic: MaicTrainingData
    split: SplitSettings
    cache: CacheOptions
    model: ModelSettings
    recipe: Recipe
    runtime: RuntimeSettings
    run: RunSettings
    options: dict

    @classmethod
    def from_options(cls, options: dict) -> "TrainSettings":
        """The groups from the resolved options (a plain dict); a recipe that breaks its rules is a UserError."""
        try:
            recipe = Recipe.from_options(options)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        return cls(InputSettings.from_options(options), MaicTrainingData.from_options(options),
                   SplitSettings.from_options(options), CacheOptions.from_options(options),
                   ModelSettings.from_options(options), recipe, RuntimeSettings.from_options(options),
                   RunSettings.from_options(options), dict(options))

    @property
    def members(self) -> list[str]:
        return ensemble.members(self.run.folds, self.recipe)

    def fold_members(self, fold: int) -> list[str]:
        return ensemble.members_of_fold(fold, self.recipe)

    def partner(self) -> "TrainSettings | None":
        """The settings of the ``--partner`` models (None without one): engine.train.ensemble.partner_options."""
        options = ensemble.partner_options(self.options, self.recipe, self.run.recipe_given)
        return None if options is None else TrainSettings.from_options(options)

    def with_arch(self, arch: str) -> "TrainSettings":
        """These settings for a starting checkpoint of another architecture (its own; the run folder unchanged)."""
        if arch == self.model.arch:
            return self
        return dataclasses.replace(self, model=dataclasses.replace(self.model, arch=arch),
                                   options={**self.options, "arch": arch})

    def result_options(self, precision: str) -> dict:
        """The resolved options that change the run's result (what its manifest records): every option but the
        runtime ones, with the precision actually used, the files' identity of the pretrained checkpoint and the
        teacher, and the epoch count only where it shapes the schedule of every epoch (cosine, one-cycle) — a step
        or plateau run may be extended."""
        options = {k: v for k, v in self.options.items() if k not in runtime_options()}
        options["precision"] = precision
        options["cache_dtype"] = resolve_cache_dtype(self.cache.cache_dtype, precision)
        if self.run.pretrained:
            options["pretrained"] = fingerprint_files([self.run.pretrain_model_path], "fast", where=False)
        if self.run.teacher:
            options["teacher"] = fingerprint_files(teacher_files(self.run.teacher), "fast", where=False)
        if SCHEDULES[self.recipe.scheduler].extendable:
            options.pop("nepoch")
        return json_ready(options)

    def reads(self) -> list[tuple[str, str | None, bool]]:
        """(option, path, whether everything under it is read) of every path this run reads: none of them may be
        deleted when the run folder is cleared (a --teacher run folder: none of its files)."""
        return [("--pretrain_model_path", self.run.pretrain_model_path, True), ("--input", self.data.input, False),
                ("--labels", self.data.labels, False), ("--data_root", self.maic.data_root, False),
                ("--dataset_dir", self.maic.dataset_dir, False), ("--cache_dir", self.cache.cache_dir, False),
                *(("--teacher", path, True) for path in self.run.teacher or ())]

    @property
    def folder(self) -> Path:
        return run_dir(self.run.log_dir, self.model.arch, self.run.env)


def teacher_files(teachers: list) -> list[Path]:
    """The checkpoint files of every teacher model (their identity goes into the manifest)."""
    return [resolve_weights(Path(m))[0] for t in teachers for m in run_members(t)]


# ---- resolving the command line --------------------------------------------------------------------------------
def resolve(given: dict) -> dict:
    """Every recipe-dependent default of the parsed options filled from the recipe table (the result is what a run
    saves as options.json): the MAIC paths, the architecture and recipe, the composition, the head's bounds, the
    run name and the split seed."""
    options = dict(given)
    if options["input"] is None:
        root, mode = options["data_root"] or default_data_root(), options["mode"]
        for key, path in {f"train_for_{mode}": train_folder(root, mode),
                          f"train_for_{mode}_label": label_csv(root, mode)}.items():
            options[key] = options[key] if options[key] is not None else str(path)
    for name, value in TRAINING_PRESETS.get(options["preset"], {}).items():
        if name == "recipe" and options["arch"] is not None:
            continue  # --arch brings its own recipe
        options[name] = value if options[name] in ("auto", None) else options[name]
    options = ensemble.compose_before_recipe(options)
    options["arch"] = options["arch"] or (architecture_of_recipe(options["recipe"]) if options["recipe"] != "auto"
                                          else None) or MAIC_MODES[options["mode"]].arch
    options["recipe"] = options["recipe"] if options["recipe"] != "auto" else default_recipe(options["arch"])
    options["recipe_given"] = ensemble.given_recipe_fields(options)
    options = ensemble.compose(options)
    recipe = RECIPES[options["recipe"]]
    for field in dataclasses.fields(Recipe):
        if options[field.name] in ("auto", None):
            options[field.name] = getattr(recipe, field.name)
    options = ensemble.settle(options)
    if options["head"] == "sigmoid":  # a sigmoid head's bounds: the mode's unless given
        options["age_min"], options["age_max"] = sigmoid_bounds(options["mode"], options["age_min"],
                                                                options["age_max"])
    options["env"] = options["env"] or (options["mode"] if options["input"] is None else input_name(options["input"]))
    options["split_seed"] = options["seed"] if options["split_seed"] is None else options["split_seed"]
    return options


def checked(options: dict) -> TrainSettings:
    """The checked settings of a training run from its resolved options."""
    settings = TrainSettings.from_options(options)
    check_settings(settings)
    return settings


def check_settings(settings: TrainSettings) -> None:
    """What the options may not combine to (each a UserError naming the options)."""
    run, recipe, model = settings.run, settings.recipe, settings.model
    if not 0.0 <= settings.split.valid_ratio < 1.0:
        raise UserError("--valid_ratio must lie in [0, 1)")
    sex_input = bool(model.arch_options.get("sex_input"))
    ensemble.check_composition(run.folds, recipe, model.arch, sex_input, run.pretrained, run.teacher)
    settings.partner()  # its recipe keeps the recipe's rules
    if run.pretrained and not run.pretrain_model_path:
        raise UserError("--pretrained needs --pretrain_model_path")
    if recipe.head == "sigmoid" and not model.age_max > model.age_min:
        raise UserError(f"--age_max ({model.age_max}) must be above --age_min ({model.age_min})")
    if sex_input and not accepts_sex(model.arch):
        raise UserError(f"--sex_input needs a network that takes the person's sex (the {model.arch} takes none; "
                        f"{', '.join(n for n in MODELS if accepts_sex(n))} does)")
    if run.resume and run.overwrite:
        raise UserError("--resume continues a run and --overwrite starts it afresh: give one of them")
    exported = [t for t in run.teacher or () if str(t).lower().endswith(".onnx")]
    if exported:
        raise UserError(f"--teacher {exported[0]}: an ONNX export; the teacher is run by PyTorch on augmented views "
                        f"during training, so it takes checkpoints or run folders (anything --weights takes but an "
                        f".onnx file): give the checkpoints or the run folder it was exported from")
