"""The shape issue 27 asked for: typed settings whose groups say which options change a result, member names built
and recognised by one function, thin programs, architectures that own their rules, and every benchmark runnable."""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

import options
from engine.runs import SINGLE, fold_members, member_name, member_parts, run_member_names
from engine.train.settings import GROUPS, TrainSettings, runtime_options
from models.registry import ARCHITECTURES

ROOT = Path(__file__).resolve().parents[1]
# the options a resumed run may change, as they were listed by hand before issue 27 (manifests of earlier runs
# compare on the rest, so the derived set must not move)
RUNTIME_BEFORE = {"data_root", "train_for_adult", "train_for_adult_label", "train_for_child", "train_for_child_label",
                  "dataset_dir", "input", "labels", "log_dir", "env", "resume", "overwrite", "quiet", "num_workers",
                  "cache", "cache_dir", "cache_check", "trust_checkpoint", "device", "compile", "deterministic",
                  "infer_batch_size", "on_bad", "pretrain_model_path", "precision"}
# the options that changed a run's result then: none of them may become runtime (their manifests compare on them)
RESULT_BEFORE = {"input_format", "fs", "ptbxl_rate", "input_scale", "traces_dset", "ids_dset", "split", "valid_ratio",
                 "split_seed", "cache_dtype", "mode", "arch", "age_min", "age_max", "zscore", "sample_rate",
                 "seq_length", "recipe", "folds", "seed", "max_steps_per_epoch", "pretrained", "recipe_given",
                 "teacher", "sync_bn"}


def test_every_training_option_belongs_to_exactly_one_settings_group():
    names = set(vars(options.parse_train(["--recipe", "modern"])))
    owners = {name: [g.__name__ for g in GROUPS if name in g.option_names()] for name in names}
    assert {n: o for n, o in owners.items() if len(o) != 1} == {}
    assert set().union(*(g.option_names() for g in GROUPS)) == names  # no group field without its option
    # a runtime option added later is one declaration: no list here names it
    assert RUNTIME_BEFORE <= runtime_options() and not runtime_options() & RESULT_BEFORE


def test_settings_carry_the_resolved_options_typed():
    args = options.parse_train(["--recipe", "modern", "--width", "0.5", "--folds", "3", "--input", "x.h5",
                                "--cache", "off", "--lr_initial", "0.002"])
    settings = TrainSettings.from_options(vars(args))
    assert (settings.model.arch, settings.model.arch_options["width"], settings.run.folds) == \
        ("ECGEfficientNet", 0.5, 3)
    assert (settings.data.input, settings.cache.cache, settings.recipe.lr_initial) == ("x.h5", "off", 0.002)
    assert settings.folder == Path(args.log_dir) / f"ECGEfficientNet_{args.env}"
    # a runtime option never reaches the manifest; a result option does
    result = settings.result_options("fp32")
    assert "input" not in result and "cache" not in result and result["lr_initial"] == 0.002


def test_member_names_are_built_and_recognised_by_one_rule():
    for parts in ({"fold": 3}, {"fold": 0, "seed": 2}, {"fold": 12, "partner": "BaselineNet"},
                  {"fold": 1, "partner": "BaselineNet", "index": 4}):
        name = member_name(**parts)
        assert member_parts(name) == {"fold": None, "seed": None, "partner": None, "index": None, **parts}
    assert member_parts("fold_0_backup_x") is None and member_parts("my_model") is None
    with pytest.raises(ValueError):
        member_name(1, partner="not a name")
    assert fold_members(2, 2, "BaselineNet", 2) == ["fold_2_seed_0", "fold_2_seed_1", "fold_2_BaselineNet_0",
                                                    "fold_2_BaselineNet_1"]
    assert run_member_names(1, 1, "none", 1) == [SINGLE]
    assert run_member_names(2, 1, "BaselineNet", 1) == ["fold_0", "fold_0_BaselineNet", "fold_1",
                                                        "fold_1_BaselineNet"]


def test_the_programs_are_thin_and_only_main_reads_the_options():
    for program in ("train_interface.py", "test_interface.py", "report_interface.py", "export_interface.py"):
        source = (ROOT / program).read_text()
        assert program in ("report_interface.py", "export_interface.py") or len(source.splitlines()) <= 200
        takers = [node.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef)
                  and any(a.arg == "args" for a in node.args.args)]
        assert takers == [], (program, takers)


def test_each_architecture_owns_its_command_line_options():
    parser = options.train_parser()
    for arch in ARCHITECTURES.values():
        for option in arch.options:
            action = parser._option_string_actions[f"--{option.name}"]
            assert action.help == option.help and action.default == option.default
    registry = (ROOT / "models" / "registry.py").read_text()
    compares = [node for node in ast.walk(ast.parse(registry)) if isinstance(node, ast.Compare) and any(
        isinstance(c, ast.Constant) and c.value in ARCHITECTURES for c in [node.left, *node.comparators])]
    assert compares == []


# ---- issue 34: one declaration per option, one manifest rule, one job per module ---------------------------------
def test_every_parsers_defaults_are_its_fields_defaults():
    """Each program's parser is generated from its settings groups: every action's default is the declaring field's
    (derived, never copied), and every action belongs to exactly one declared field or architecture option."""
    from models.registry import model_options

    arch_defaults = {o.name: o.default for o in model_options()}
    groups = {"train": list(GROUPS),
              "test": [g for g, _ in options.PREDICT_GROUPS], "report": [g for g, _ in options.REPORT_GROUPS],
              "export": [g for g, _ in options.EXPORT_GROUPS]}
    for program, parser in options.PARSERS.items():
        fields = {f.name: (g, f) for g in groups[program] for f in g.declared()}
        for action in parser()._actions:
            if action.dest == "help":
                continue
            if action.dest in arch_defaults and action.dest not in fields:
                assert action.default == arch_defaults[action.dest], (program, action.dest)
                continue
            group, field = fields[action.dest]
            expected = None if action.required else group.parser_default(field)
            assert action.default == expected, (program, action.dest, action.default, expected)
    assert not any(isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "add_argument"
                   for n in ast.walk(ast.parse((ROOT / "options.py").read_text())))


def test_help_states_each_default_once():
    """--help of every program: every option has a help line that states its default; one whose help says it in
    words gets no second "(default: None)" from argparse."""
    import re

    for program, parser in options.PARSERS.items():
        built = parser()
        text = re.sub(r"\s+", " ", built.format_help())
        assert not re.search(r"\(default:[^()]*(\([^()]*\)[^()]*)*\) \(default:", text), program
        for action in built._actions:
            if action.option_strings and action.dest != "help":  # every option says what it does, and its default
                assert action.help and action.help is not argparse.SUPPRESS, (program, action.dest)
                said = re.sub(r"\s+", " ", built._get_formatter()._expand_help(action))
                assert said.count("(default:") <= 1 and re.search(r"\bdefault\b", said), (program, action.dest, said)


def test_a_new_result_changing_option_keeps_older_runs_resumable(tmp_path):
    """Declaring one more result-changing option (a field with a default) is all it takes: a manifest written
    before it existed lacks it and still compares equal; a run given another value is refused, naming it."""
    import dataclasses

    from engine.runs import manifest_differences
    from engine.train import settings as train_settings
    from utils.settings import Settings, option

    @dataclasses.dataclass(frozen=True)
    class Later(Settings):
        new_option: float = option(0.25, "an option added in a later version")

    args = options.parse_train(["--recipe", "modern", "--input", str(tmp_path)])
    old = {"options": TrainSettings.from_options(vars(args)).result_options("fp32"), "members": ["m"]}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_settings, "GROUPS", (*GROUPS, Later))
        absent = train_settings.absent_values()
        for value, differs in ((0.25, False), (0.5, True)):
            new = {"options": {**old["options"], "new_option": value}, "members": ["m"]}
            found = manifest_differences(old, new, absent)
            assert bool(found) == differs and (not differs or "--new_option: 0.25 in the run, 0.5 now" in found[0])


def test_manifests_of_the_previous_version_still_compare_equal(tmp_path):
    """Manifests written before issue 34 left out options at their 'no partner / no distillation' values; each
    compares equal to today's record of the same experiment."""
    from engine.runs import manifest_differences
    from engine.train.settings import absent_values

    for argv in (["--recipe", "modern", "--folds", "3"], ["--recipe", "modern", "--folds", "3", "--partner", "none"],
                 ["--arch", "ResDenseNet", "--nepoch", "3"]):
        args = options.parse_train([*argv, "--input", str(tmp_path)])
        now = TrainSettings.from_options(vars(args)).result_options("fp32")
        before = {k: v for k, v in now.items() if not (
            (k in ("partner", "recipe_given") and now["partner"] == "none") or (k == "partners" and v == 1) or
            k in ("teacher", "teacher_weight", "teacher_views"))}
        assert manifest_differences({"options": before, "members": []}, {"options": now, "members": []},
                                    absent_values()) == [], argv


def test_the_house_keeps_its_sizes_and_has_no_import_cycle():
    """Issue 34's targets: no package module over 450 lines, no class over 200, report_interface.py at most 150
    lines, and no import cycle among the project's modules (function-local imports included)."""
    import grimp

    packages = ("engine", "dataloader", "models", "utils")
    sources = [p for pkg in packages for p in (ROOT / pkg).rglob("*.py")]
    assert [str(p) for p in sources if len(p.read_text().splitlines()) > 450] == []
    classes = [f"{p.name}:{n.name}" for p in sources for n in ast.walk(ast.parse(p.read_text()))
               if isinstance(n, ast.ClassDef) and n.end_lineno - n.lineno + 1 > 200]
    assert classes == []
    assert len((ROOT / "report_interface.py").read_text().splitlines()) <= 150
    graph = grimp.build_graph(*packages)
    cycles = [(a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
              if graph.chain_exists(importer=b, imported=a)]
    assert cycles == []
