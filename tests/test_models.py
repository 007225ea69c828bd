"""Architectures: exact parameter names/shapes/counts, reference outputs, and checkpoint compatibility."""
from __future__ import annotations

import re

import pytest
import torch
from conftest import SPEC, TINY, need

import options
from models.checkpoint import load_bundle, save_checkpoint
from models.registry import MODELS, get_model, infer_model_args, model_args

# The architectures ../shared/spec describes (names, shapes, reference fixtures), read from its sections; the others
# (ECGEfficientNet, BaselineNet) are this project's. Every architecture of the registry is tested below.
SPEC_KEYS = SPEC / "state_dict_keys.txt"
SEED_ARCHS = re.findall(r"^\[(\w+)\]", SPEC_KEYS.read_text(), re.M) if SPEC_KEYS.exists() else []
SMALL = {"ECGEfficientNet": ["--width", "0.25"], **TINY}  # tiny widths where the defaults are large


def spec_entries(arch: str) -> tuple[int, list[tuple[str, tuple]]]:
    text = need(SPEC / "state_dict_keys.txt").read_text()
    block = text.split(f"[{arch}]")[1].split("\n[")[0]
    count = int(re.search(r"parameters=(\d+)", block).group(1))
    entries = []
    for line in block.splitlines()[1:]:
        if line.strip():
            name, shape = line.split(" ", 1)
            entries.append((name, tuple(int(v) for v in re.findall(r"\d+", shape))))
    return count, entries


@pytest.mark.parametrize("arch", SEED_ARCHS)
def test_full_size_state_dict_matches_spec(arch):
    count, entries = spec_entries(arch)
    model = get_model(arch)
    assert sum(p.numel() for p in model.parameters()) == count
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == entries


@pytest.mark.parametrize("arch", SEED_ARCHS)
def test_reference_fixture_reproduced(arch):
    fixture = torch.load(need(SPEC / f"{arch}_small.pt"), weights_only=False)
    model = get_model(arch, **fixture["config"])
    model.load_state_dict(fixture["state_dict"], strict=True)
    model.eval()
    with torch.no_grad():
        out = model(fixture["input"])
    assert out.shape == fixture["output"].shape
    torch.testing.assert_close(out, fixture["output"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", SEED_ARCHS)
def test_seed_format_checkpoint_round_trip(tmp_path, arch):
    """A checkpoint as the seed code saves it ({'model', 'optimizer', 'epoch'}, DataParallel 'module.' prefix,
    no metadata) loads strictly, with the architecture and widths read from its shapes, and gives the same output."""
    fixture = torch.load(need(SPEC / f"{arch}_small.pt"), weights_only=False)
    model = get_model(arch, **fixture["config"])
    model.load_state_dict(fixture["state_dict"])
    optimizer = torch.optim.Adam(model.parameters())
    path = tmp_path / "seed.pt"
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(), "epoch": 12}, path)
    bundle = load_bundle(path)
    assert bundle.arch == arch
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(fixture["input"]), fixture["output"], atol=1e-4, rtol=0)
    expected_head = {"ResDenseNet": (19.0, 122.0), "ResUDenseNet": (0.0, 9.0)}.get(arch)
    if expected_head:
        assert (bundle.head.kind, bundle.head.low, bundle.head.high) == ("sigmoid", *expected_head)
        assert bundle.preprocessing.fs == 500 and bundle.preprocessing.bandpass == (1.0, 47.0)
    else:
        assert bundle.head.kind == "linear" and bundle.preprocessing.fs == 400


def test_registry_overrides_and_errors():
    assert model_args("ResUDenseNet", out_ch=32)["out_ch"] == 32
    with pytest.raises(ValueError, match="no argument"):
        get_model("ResDenseNet", width=3)
    with pytest.raises(ValueError, match="unknown architecture"):
        get_model("VGG")
    name, args = infer_model_args(get_model("ResDenseNet", out_ch=16, mid_ch=8).state_dict())
    assert name == "ResDenseNet" and args["out_ch"] == 16 and args["mid_ch"] == 8
    assert set(SEED_ARCHS) <= set(MODELS)


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_every_registered_architecture_builds_runs_and_round_trips(arch, tmp_path):
    """Any architecture of the registry: built from its command-line options with its default recipe, it takes
    its input length, gives one finite age per record, and its checkpoint loads strictly as the same network (the
    architecture and widths read back) with the same outputs."""
    from engine.train.members import build_bundle

    bundle = build_bundle(options.train_settings(options.parse_train(["--arch", arch, *SMALL.get(arch, [])])))
    bundle.model.eval()
    x = torch.randn(2, 12, bundle.preprocessing.length)
    sex = torch.tensor([1.0, 0.0])
    with torch.no_grad():
        ages = bundle.head(bundle.model(x, sex) if bundle.takes_sex else bundle.model(x))
    assert ages.shape == (2,) and torch.isfinite(ages).all()
    loaded = load_bundle(save_checkpoint(tmp_path / "m.pt", bundle))
    assert (loaded.arch, loaded.model_args, loaded.preprocessing) == (arch, bundle.model_args, bundle.preprocessing)
    with torch.no_grad():
        again = loaded.head(loaded.model.eval()(x, sex) if loaded.takes_sex else loaded.model.eval()(x))
    torch.testing.assert_close(again, ages)


def test_heads_bound_the_age():
    from models.registry import ADULT_HEAD, CHILD_HEAD

    raw = torch.tensor([-1e4, 0.0, 1e4])
    assert ADULT_HEAD(raw).tolist() == [19.0, 19.0 + 103 / 2, 122.0]
    assert CHILD_HEAD(raw).tolist() == [0.0, 4.5, 9.0]
