"""The one home of a run's composition: how many models a fold trains (``--seeds``, ``--partner``, ``--partners``),
what a partner's settings are, and distillation's rules (``--teacher``) — resolved, checked and named here only.

``compose_before_recipe``, ``compose`` and ``settle`` fill the composition options of a command line (a distilled
network is one modern network per fold; a single split trains one model; options that cannot matter are set to
the value that says so, so a manifest records the experiment, not what was typed); ``check_composition`` refuses
what cannot be combined; ``members`` and ``partner_options`` say what a run trains.
"""
from __future__ import annotations

import dataclasses

from engine.runs import fold_members, run_member_names
from models.build import sigmoid_bounds
from models.registry import accepts_sex, architecture, default_recipe, model_options
from utils.bounds import MAX_FOLDS
from utils.errors import UserError

from .recipes import MODELS_PER_FOLD, RECIPES, Recipe

NO_PARTNER = "none"
TEACHER_VIEWS = 8  # a distilled network's stored views per record unless --teacher_views says otherwise


def compose_before_recipe(options: dict) -> dict:
    """Distillation's defaults, before the recipe is chosen: a distilled network is the modern recipe's unless
    --arch/--recipe say otherwise, and one network per fold."""
    if options["teacher"] and options["arch"] is None and options["recipe"] == "auto":
        options["recipe"] = "modern"
    if options["teacher"] and options["partner"] in ("auto", None):
        options["partner"] = NO_PARTNER
    if options["teacher"] and options["teacher_views"] is None:
        options["teacher_views"] = TEACHER_VIEWS
    return options


def compose(options: dict) -> dict:
    """The composition options before the recipe fills the rest: a single split trains one model; no partner, no
    partner models."""
    if options["folds"] == 1:  # the recipe's models per fold are for cross-validated runs
        options["seeds"] = 1 if options["seeds"] is None else options["seeds"]
        options["partner"] = NO_PARTNER if options["partner"] in ("auto", None) else options["partner"]
    if options["partner"] == NO_PARTNER and options["partners"] is None:
        options["partners"] = 1
    return options


def settle(options: dict) -> dict:
    """Options that cannot matter set to the value that says so, once the recipe is filled in: without a partner
    what was given shapes no partner's recipe; without a teacher there is no distillation."""
    if options["partner"] == NO_PARTNER:
        options["recipe_given"] = ()
    if not options["teacher"]:
        options["teacher_weight"] = Recipe.absent_values()["teacher_weight"]
        options["teacher_views"] = 0
    return options


def given_recipe_fields(options: dict) -> tuple:
    """The recipe options given on the command line that a partner keeps (not the run's members)."""
    given = [f.name for f in dataclasses.fields(Recipe) if options.get(f.name) not in ("auto", None)]
    return tuple(sorted(set(given) - set(MODELS_PER_FOLD)))


def members(folds: int, recipe: Recipe) -> list[str]:
    return run_member_names(folds, recipe.seeds, recipe.partner, recipe.partners)


def members_of_fold(fold: int, recipe: Recipe) -> list[str]:
    return fold_members(fold, recipe.seeds, recipe.partner, recipe.partners)


def partner_options(options: dict, recipe: Recipe, recipe_given: tuple) -> dict | None:
    """The options of the ``--partner`` models (None without one): the run's data, preprocessing, runtime and the
    recipe options given on the command line; for the rest the partner's own recipe; one model per fold; and of the
    model options only those the partner takes."""
    if recipe.partner == NO_PARTNER:
        return None
    options = dict(options)
    arch = options["arch"] = recipe.partner
    options["recipe"] = default_recipe(arch)
    keep = {"preprocessing", *recipe_given}
    own = RECIPES[options["recipe"]]
    options.update({f.name: getattr(own, f.name) for f in dataclasses.fields(Recipe) if f.name not in keep})
    options.update(seeds=1, partner=NO_PARTNER, partners=1)
    taken = set(architecture(arch).option_names)
    options.update({o.name: o.default for o in model_options() if o.name not in taken})
    options["age_min"], options["age_max"] = sigmoid_bounds(options["mode"], None, None) \
        if options["head"] == "sigmoid" else (None, None)
    return options


def check_composition(folds: int, recipe: Recipe, arch: str, sex_input: bool, pretrained: bool,
                      teacher: list | None) -> None:
    """What the composition options may not combine to (each a UserError naming the options)."""
    several = recipe.seeds > 1 or recipe.partner != NO_PARTNER or recipe.partners > 1
    if not 1 <= folds <= MAX_FOLDS or (several and folds == 1):
        raise UserError(f"--folds must be ≥ 1 and ≤ {MAX_FOLDS}, and --seeds > 1 or a --partner needs --folds > 1 "
                        f"(a single split trains one model)")
    if recipe.partners > 1 and recipe.partner == NO_PARTNER:
        raise UserError(f"--partners {recipe.partners} needs a --partner architecture (here none)")
    if recipe.partner != NO_PARTNER and (pretrained or (sex_input and not accepts_sex(recipe.partner))):
        raise UserError(f"--partner {recipe.partner} trains new models of another architecture beside --arch "
                        f"{arch}: it cannot start from --pretrained, and every model of the run must read the "
                        f"sex or none (--sex_input); pass --partner none")
    if teacher and (recipe.partner != NO_PARTNER or recipe.seeds > 1):
        raise UserError("--teacher distils the teacher into one network per fold: pass --partner none and --seeds 1")
