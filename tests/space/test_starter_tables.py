"""A space file's [[starter]] tables: whole candidates, checked against the space by replaying its
sampler, every problem reported at once with the starter's number (and refused by the CLI with
exit 2 before anything is written)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from conftest import run_cli

from cnnsearch.errors import SpaceError
from cnnsearch.space.parse import load_space
from cnnsearch.space.sample import params_for, sample_architecture
from cnnsearch.space.starters import parse_starters, starter_architectures

SPACE = """
[network]
stages = [1, 2]
filters = [8, 16]
width_multiplier = 2.0
batch_norm = [true, false]

[stage]
convs = 1
kernel_size = [3, 5]
pool = true

[head]
pooling = "gap"
dropout = { low = 0.0, high = 0.4, step = 0.1 }

[train]
lr = { low = 1e-3, high = 1e-2, log = true }
batch_size = 32
epochs = 2
"""

GOOD = """
[[starter]]
network = { stages = 2, filters = 8, batch_norm = true }
stage1 = { kernel_size = 3 }
stage2 = { kernel_size = 5 }
head = { dropout = 0.2 }
train = { lr = 0.003 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(SPACE + text)
    return path


def test_a_starter_becomes_the_parameters_that_sample_its_network(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, GOOD))
    assert space.starters == (
        {
            "network.stages": 2,
            "network.filters": 8,
            "stage1.kernel_size": 3,
            "network.batch_norm": True,
            "stage2.kernel_size": 5,
            "head.dropout": 0.2,
            "train.lr": 0.003,
        },
    )
    (arch,) = starter_architectures(space)
    assert arch.compact() == "c8k3-mp2-c16k5-mp2-gap-d0.2 relu+bn"
    # Optuna's own FixedTrial asks the same questions and gets the same network.
    assert sample_architecture(space, optuna.trial.FixedTrial(space.starters[0])) == arch
    assert params_for(space, arch) == space.starters[0]  # the warm-start inverse agrees


def test_the_shipped_starters_are_whole_candidates_of_their_space() -> None:
    for name in ("default", "cifar"):
        space = load_space(name)
        assert space.starters, f"{name} ships starters"
        for params, arch in zip(space.starters, starter_architectures(space), strict=True):
            assert sample_architecture(space, optuna.trial.FixedTrial(params)) == arch
            assert params_for(space, arch) is not None


def test_every_problem_of_every_starter_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD.replace("filters = 8", "filters = 12").replace("lr = 0.003", "lr = 0.5, batch_size = 32")
        + """
[[starter]]
network = "big"

[[starter]]
network = { stages = true, filters = 16, batch_norm = 1 }
stage1 = { kernel_size = 3 }
head = { dropout = 0.25 }
trian = { lr = 0.003 }
""",
    )
    with pytest.raises(SpaceError) as caught:
        load_space(path)
    where = str(path)
    assert sorted(str(caught.value).splitlines()) == sorted(
        f"{where}: {line}"
        for line in (
            "[[starter]] 1: network.filters = 12 is not one of 8, 16",
            "[[starter]] 1: train.lr = 0.5 is not a number from 0.001 to 0.01",
            "[[starter]] 1: train.batch_size is never asked for by this candidate (a fixed key, or a part it "
            "does not have); remove it",
            '[[starter]] 2: network must be a table of values, e.g. network = { key = value }, but got "big"',
            "[[starter]] 3: network.stages = true is not one of 1, 2",
            "[[starter]] 3: network.batch_norm = 1 is not one of true, false",
            "[[starter]] 3: head.dropout = 0.25 is not a number from 0 to 0.4 in steps of 0.1",
            "[[starter]] 3: train.lr is not set; it may be a number from 0.001 to 0.01",
            "[[starter]] 3: trian.lr is never asked for by this candidate (a fixed key, or a part it does not "
            "have); did you mean 'train.lr'?",
        )
    )


def test_a_bad_starter_is_refused_before_a_run_is_made(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("stage2 = { kernel_size = 5 }", "stage3 = { kernel_size = 5 }"))
    runs = tmp_path / "runs"
    done = run_cli("search", "--space", str(path), "--data", "digits", "--name", "bad", "--runs-dir", str(runs))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {path}: [[starter]] 1: stage2.kernel_size is not set; it may be one of 3, 5",
        f"{path}: [[starter]] 1: stage3.kernel_size is never asked for by this candidate (a fixed key, or a part "
        "it does not have); did you mean 'stage2.kernel_size'?",
    ]
    assert "Traceback" not in done.stderr
    assert not (runs / "bad").exists()


def test_a_sequence_starter_is_written_as_nested_tables() -> None:
    """The sequence form's names have two dots (`layer1.conv.filters`): a starter writes them as
    nested tables, `layer1 = { kind = "conv", conv = { filters = 32 } }`."""
    space = load_space("sequence")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(5):
        trial = study.ask()
        sample_architecture(space, trial)
        nested: dict = {}
        for name, value in trial.params.items():
            *groups, key = name.split(".")
            table = nested
            for group in groups:
                table = table.setdefault(group, {})
            table[key] = value
        starters, problems = parse_starters([nested], space)
        assert problems == [] and starters == (trial.params,)


def test_space_show_lists_the_starters() -> None:
    done = run_cli("space", "show", "default")
    assert done.returncode == 0, done.stderr
    arches = [arch.compact() for arch in starter_architectures(load_space("default"))]
    tail = done.stdout.splitlines()[-1 - len(arches) :]
    assert len(arches) == 3
    assert tail == [
        "starters, trained first by a new run (--no-starters skips them):",
        *(f"  {number}. {compact}" for number, compact in enumerate(arches, start=1)),
    ]
