"""The shape of the code base: imports point down (import-linter checks the packages; here the top-level modules),
each program takes only the options it reads, and the design card's commands find data at the default place."""
from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, TINY

import options
import test_interface
import train_interface

PROGRAMS = ("train_interface", "test_interface", "report_interface", "export_interface")


def top_level_imports(module: str) -> set[str]:
    path = ROOT / module / "__init__.py" if (ROOT / module).is_dir() else ROOT / f"{module}.py"
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_top_level_modules_import_only_downwards():
    assert not top_level_imports("options") & {*PROGRAMS, "ecg_age"}
    assert not top_level_imports("ecg_age") & {*PROGRAMS, "options"}  # the API sits beside the programs
    for program in PROGRAMS:
        assert not top_level_imports(program) & (set(PROGRAMS) - {program}), program


@pytest.mark.parametrize("program,argv", [
    ("train", ["--tta", "5"]), ("train", ["--output", "x.csv"]), ("train", ["--weights_adult", "a.pt"]),
    ("train", ["--on_bad", "fill"]), ("test", ["--nepoch", "3"]), ("test", ["--lr_initial", "0.1"]),
    ("test", ["--dataset_dir", "d"]), ("test", ["--pretrained"]), ("report", ["--tta", "2"])])
def test_an_option_a_program_does_not_read_is_an_error(program, argv, capsys):
    parser = {"train": options.train_parser, "test": options.test_parser, "report": options.report_parser}[program]()
    required = ["--predictions", "p", "--labels", "l", "--out", "o"] if program == "report" else []
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([*required, *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err or "invalid choice" in err, err


def test_seed_option_names_still_parse():
    args = options.parse_train(["--mode=adult", "--arch=ResDenseNet", "--train_for_adult", "a",
                                "--train_for_adult_label", "b.csv", "--nepoch", "2", "--batch_size", "4",
                                "--lr_initial", "0.01", "--decay_epoch", "5", "--pretrained", "--pretrain_model_path",
                                "x.pt", "--env", "e"])
    assert (args.train_for_adult, args.nepoch, args.decay_epoch, args.env) == ("a", 2, 5, "e")
    args = options.parse_test(["--test_for_adult", "t", "--weights_adult", "w.pt", "--submission_template", "s.csv",
                               "--batch_size", "4"])
    assert (args.test_for_adult, args.weights_adult, args.infer_batch_size) == ("t", ["w.pt"], 4)


def test_missing_default_data_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ECG_AGE_DATA_ROOT", str(tmp_path / "nowhere"))
    assert train_interface.entry(["--mode=adult", "--arch=ResDenseNet", "--log_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"looked for the folder {tmp_path / 'nowhere' / 'ECG_adult_numpy_train'}" in err
    assert "make demo" in err and "--data_root" in err
    assert test_interface.entry(["--log_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"looked for {tmp_path / 'nowhere'}/submission.csv" in err and "make demo" in err


def test_design_card_commands_use_the_default_data_root_and_runs(maic_adult, tmp_path, monkeypatch):
    """`train_interface.py --mode=adult --arch=ResDenseNet` then `test_interface.py` with data at the default root
    ($ECG_AGE_DATA_ROOT here; only the output folders and a tiny width are given): the submission is filled from the
    default run's best checkpoint."""
    root = tmp_path / "maic2023"
    shutil.copytree(maic_adult, root)
    monkeypatch.setenv("ECG_AGE_DATA_ROOT", str(root))
    folders = ["--log_dir", str(tmp_path / "log"), "--cache_dir", str(tmp_path / "cache")]
    assert train_interface.entry(["--mode=adult", "--arch=ResDenseNet", *TINY["ResDenseNet"], "--nepoch", "1",
                                  "--batch_size", "8", "--dataset_dir", str(tmp_path / "dataset"), "--quiet",
                                  *folders]) == 0
    assert (tmp_path / "log" / "ResDenseNet_adult" / "best.pt").exists()
    output = tmp_path / "submission.csv"
    assert test_interface.entry([*folders, "--output", str(output), "--quiet"]) == 0
    submission = pd.read_csv(output)
    assert submission["FILENAME"].tolist() == pd.read_csv(root / "submission.csv")["FILENAME"].tolist()
    assert submission["AGE"].between(19, 122).all()
    assert Path(options.parse_test([]).data_root) == root


def project_sources() -> list[Path]:
    """The project's own code (not its tests or the virtual environment)."""
    skip = {".venv", "tests", "build", "dist"}  # build/ and dist/: copies a `pip install .` leaves behind
    return [p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)]


def test_no_function_is_longer_than_fifty_lines():
    long = [f"{path.relative_to(ROOT)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in project_sources() for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 50]
    assert not long, long


def test_architecture_names_are_tested_only_in_models():
    """Outside models/ the code asks the registry (default recipe, sex input, layout, lengths), never a name."""
    from models.registry import MODELS

    found = []
    for path in project_sources():
        if path.relative_to(ROOT).parts[0] == "models":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                names = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
                found += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names if n in MODELS]
    assert not found, found


def test_recipe_table_drives_the_options_and_rejects_unknown_names():
    import dataclasses

    from engine.train.recipes import RECIPES, Recipe

    parser = options.train_parser()
    for field in dataclasses.fields(Recipe):
        assert f"--{field.name}" in parser._option_string_actions, field.name
    args = options.parse_train(["--recipe", "lima", "--lr_initial", "0.02"])
    recipe = options.train_settings(args).recipe
    assert recipe == dataclasses.replace(RECIPES["lima"], lr_initial=0.02)
    for name, value in (("optimizer", "sgd"), ("scheduler", "linear"), ("loss", "huber")):
        with pytest.raises(ValueError, match=f"--{name} must be one of"):
            dataclasses.replace(RECIPES["modern"], **{name: value})
    with pytest.raises(SystemExit):  # argparse: the choices come from the registries
        options.train_parser().parse_args(["--optimizer", "sgd"])


def test_env_defaults_to_the_mode_only_in_maic_mode(tmp_path):
    assert options.parse_train(["--mode", "child"]).env == "child"
    assert options.parse_train(["--input", str(tmp_path / "ptbxl")]).env == "ptbxl"
    assert options.parse_train(["--input", "/data/code15/exams_part0.hdf5"]).env == "exams_part0"


DOCUMENTS = ("README.md", "MODEL_CARD.md", "ARCHITECTURE.md", "bench/README.md", *sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_anchors(document: Path) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation but '-' and '_' dropped, each space a
    '-' (a repeated heading gets -1, -2, …)."""
    anchors, seen = set(), {}
    inside_code = False
    for line in document.read_text().splitlines():
        inside_code ^= line.startswith("```")
        if inside_code or not re.match(r"#{1,6} ", line):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_link_of_the_documents_leads_somewhere(document):
    """A newcomer's documents: every link to a file of the repository names one that exists, and every anchor a
    heading of its document (a renamed section must not leave a dead link behind)."""
    source = ROOT / document
    dead = []
    for target in LINK.findall(source.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto: — outside the repository
            continue
        path, _, anchor = target.partition("#")
        linked = (source.parent / path).resolve() if path else source
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked)):
            dead.append(target)
    assert not dead, f"{document}: dead links {dead}"


def test_the_readme_a_newcomer_reads_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300
    opening = "\n".join(lines[:8])
    assert "make demo" in opening and "make test" in opening
    assert any(line.startswith("## Quick start") for line in lines[:40])


def test_the_model_cards_training_command_is_the_one_make_model_runs():
    """MODEL_CARD.md shows the command that rebuilds the shipped model; it names every training option of the
    Makefile's (precision included: auto would train another model on a bf16 CPU) with the same values, and no
    other — so the card cannot drift from what `make model` runs."""
    def options(words: list[str]) -> dict[str, str]:
        found = {}
        for i, word in enumerate(words):
            if word.startswith("--"):
                following = words[i + 1] if i + 1 < len(words) else ""
                found[word] = "" if following.startswith("--") else following
        return found

    card = (ROOT / "MODEL_CARD.md").read_text()
    command = re.search(r"python train_interface\.py (.*?)\n```", card, re.S).group(1).replace("\\\n", " ")
    make = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^SHIP_TRAIN = (.*?[^\\])$", make, re.S | re.M).group(1).replace("\\\n", " ")
    shown, made = options(command.split()), options(recipe.replace("$(SHARED)", "../shared/data").split())
    per_run = {"--seed", "--env"}  # the card shows one run of the Makefile's loop over its seeds
    where = {"--device", "--log_dir", "--quiet"}  # how the Makefile runs it, not what it trains
    assert made.get("--precision") == "fp32"
    assert {k: v for k, v in shown.items() if k not in per_run} == {k: v for k, v in made.items() if k not in where}
