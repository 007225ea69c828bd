"""The shape issue 27 asked for: typed settings whose groups say which options change a result, member names built
and recognised by one function, thin programs, architectures that own their rules, and every benchmark runnable."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import options
from engine.runs import SINGLE, fold_members, member_name, member_parts, run_member_names
from engine.train.experiment import GROUPS, TrainSettings, runtime_options
from models.registry import ARCHITECTURES

ROOT = Path(__file__).resolve().parents[1]
# the options a resumed run may change, as they were listed by hand before issue 27 (manifests of earlier runs
# compare on the rest, so the derived set must not move)
RUNTIME_BEFORE = {"data_root", "train_for_adult", "train_for_adult_label", "train_for_child", "train_for_child_label",
                  "dataset_dir", "input", "labels", "log_dir", "env", "resume", "overwrite", "quiet", "num_workers",
                  "cache", "cache_dir", "cache_check", "trust_checkpoint", "device", "compile", "deterministic",
                  "infer_batch_size", "on_bad", "pretrain_model_path", "precision"}
RUNTIME_SINCE = {"threads"}  # runtime options added later: never in a manifest, so earlier runs stay resumable


def test_every_training_option_belongs_to_exactly_one_settings_group():
    names = set(vars(options.parse_train(["--recipe", "modern"])))
    owners = {name: [g.__name__ for g in GROUPS if name in g.option_names()] for name in names}
    assert {n: o for n, o in owners.items() if len(o) != 1} == {}
    assert set().union(*(g.option_names() for g in GROUPS)) == names  # no group field without its option
    assert runtime_options() == RUNTIME_BEFORE | RUNTIME_SINCE


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


BENCHES = sorted(p.name for p in (ROOT / "bench").glob("*.py"))


@pytest.mark.parametrize("bench", BENCHES)
def test_every_benchmark_has_help_and_a_quick_mode(bench):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / bench), "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0 and "--quick" in done.stdout, done.stderr[-2000:]


def run_quick(bench: str, *argv: str) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / bench), "--quick", *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_quick_memory_and_reader_benchmarks_run(tmp_path, ptbxl):
    sizes = run_quick("memory.py", "--json")["sizes"]
    assert [s["n"] for s in sizes] == [500, 1000]
    assert all(s["n"] - 32 < s["rows_read"] <= s["n"] for s in sizes)  # every whole batch of 32 read once
    rows = run_quick("reader_memory.py", "--work", str(tmp_path / "rm"))["rows"]
    assert len(rows) == 6 and all(r["outcome"] == "read" for r in rows)
    readers = run_quick("readers.py", "--ptbxl", str(ptbxl))
    assert readers["records"] == 2 and all(r["max_error_mv"] < 0.05 for r in readers["rows"].values())


def test_quick_throughput_and_explanation_benchmarks_run(tmp_path, modern_cv_run, cinc):
    speed = run_quick("throughput.py", "--arch", "BaselineNet")
    assert speed["train_samples_per_s"] > 0 and speed["infer_samples_per_s"] > 0
    result = run_quick("explain.py", "--weights", str(modern_cv_run[1]), "--input", str(cinc), "--work",
                       str(tmp_path / "explain"))
    (method, summary), = result["methods"].items()
    assert summary["records"] == 2 and 0.0 <= result["intervals"]["coverage"] <= 1.0


def test_quick_pipeline_benchmark_runs(tmp_path, ptbxl):
    result = run_quick("pipeline.py", "--work", str(tmp_path), "--ptbxl", str(ptbxl))
    (row,) = result["sizes"]
    assert row["n"] == row["rows"] == 128 and row["end_to_end_ecg_per_s"] > 0 and row["model_ecg_per_s"] > 0
    assert 0 < row["ratio"] and row["peak_rss_mb"] > 0 and result["cpu_flags"] is not None


def test_quick_figure_comparison_runs(tmp_path, cinc):
    result = run_quick("figures.py", "--work", str(tmp_path), "--input", str(cinc))
    assert result["records"] == 2
    for library in ("ours", "ecg_plot"):  # both draw the clinical scale: 25 mm/s, 10 mm/mV
        assert abs(result[library]["mm_per_s"] - 25) < 1e-6 and abs(result[library]["mm_per_mv"] - 10) < 1e-6
    assert result["ours"]["embedded_kb"] < result["ours"]["png_kb"]


def test_quick_frontier_benchmark_runs(tmp_path, modern_cv_run, cinc, ptbxl):
    """The frontier's mechanics on a tiny 2-fold run in every role: out-of-fold points paired with the teacher,
    each fold's int8 export predicting its own held-out records, the costs and the one network's speeds."""
    _, run = modern_cv_run
    result = run_quick("frontier.py", "--teacher", str(run), "--distilled", str(run), "--alone", str(run),
                       "--external", str(cinc), "--ptbxl", str(ptbxl), "--work", str(tmp_path))
    points = result["points"]
    assert points["distilled"]["oof_mae"] == points["one_network"]["oof_mae"]  # the same run: the same errors
    assert points["distilled"]["vs_alone"]["diff"] == 0 and points["distilled_onnx_fp32"]["records"] > 300
    assert abs(points["distilled_onnx_fp32"]["oof_mae"] - points["distilled"]["oof_mae"]) < 0.01  # fp32 export
    assert len(points["distilled_int8"]["scopes"]) == 2 and points["one_network"]["model_ecg_per_s"] > 0
    assert points["ensemble_15"]["external_mae"] > 0 and points["fold_three"]["gflop_per_ecg"] > 0
