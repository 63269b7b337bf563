"""Starters in a real search (the CLI in a subprocess, real Optuna studies, real training on digits):
a new run trains the space's [[starter]] candidates first and to the end, whatever the pruner says;
random search and --no-starters skip them; a resume does not queue them again."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from conftest import load_study, run_cli, start_cli

from cnnsearch.outcomes import TrialRecord
from cnnsearch.space.parse import load_space
from cnnsearch.space.starters import starter_architectures
from cnnsearch.spec import count_params

SPACE = """
[network]
stages = [1, 2]
filters = [8, 16]
width_multiplier = 2.0

[stage]
convs = 1
kernel_size = [3, 5]
pool = true

[head]
pooling = "gap"

[train]
lr = { low = 1e-4, high = 2e-2, log = true }
batch_size = 32
epochs = 3

# A strong network, then one so weak (a 1e-4 learning rate) that ASHA would stop it after epoch 1.
[[starter]]
network = { stages = 2, filters = 16 }
stage1 = { kernel_size = 3 }
stage2 = { kernel_size = 3 }
train = { lr = 0.02 }

[[starter]]
network = { stages = 1, filters = 8 }
stage1 = { kernel_size = 5 }
train = { lr = 1e-4 }
"""

QUEUED = "queued the space's 2 starters to train first (known-good networks; --no-starters skips them)"
COMMON = ("--data", "digits", "--subset", "400", "--seed", "0", "--device", "cpu")


def test_a_new_run_trains_the_starters_first_and_to_the_end(tmp_path: Path) -> None:
    space_file = tmp_path / "space.toml"
    space_file.write_text(SPACE)
    runs = tmp_path / "runs"
    args = ("--name", "s", "--runs-dir", str(runs))
    done = run_cli("search", "--space", str(space_file), *COMMON, *args, "--trials", "3", "--pruner", "asha")
    assert done.returncode == 0, done.stderr
    assert QUEUED in done.stderr.splitlines()
    trials = load_study(runs, "s").get_trials()
    starters = load_space(space_file).starters
    for number, params in enumerate(starters):
        record = TrialRecord.of(trials[number])
        assert trials[number].params == params and record.starter == number + 1
        assert record.outcome == "complete" and record.epochs_run == 3, record.reason
    # Asked like any trial, so ASHA records their scores: they are the rung's reference.
    assert all("completed_rung_0" in trial.system_attrs for trial in trials[:2])
    strong, weak = (TrialRecord.of(trial).val_acc for trial in trials[:2])
    # ASHA promotes the best of two at the first rung: unprunable, the weak starter still trained on.
    assert weak[0] < strong[0]
    assert TrialRecord.of(trials[2]).starter is None
    shown = run_cli("show", "s", "1", "--runs-dir", str(runs))
    rows = [" ".join(line.split()) for line in shown.stdout.splitlines()]
    assert "queued as starter 2 of the space (trained to the end, never pruned)" in rows

    resumed = run_cli("search", *args, "--trials", "4")
    assert resumed.returncode == 0, resumed.stderr
    assert "starter" not in resumed.stderr
    trials = load_study(runs, "s").get_trials()
    assert len(trials) == 4 and sum(TrialRecord.of(trial).starter is not None for trial in trials) == 2


def test_random_search_and_no_starters_skip_them(tmp_path: Path) -> None:
    space_file = tmp_path / "space.toml"
    space_file.write_text(SPACE)
    runs = tmp_path / "runs"
    for name, flags, queued in (
        ("random", ("--sampler", "random"), False),
        ("random-with", ("--sampler", "random", "--starters"), True),
        ("tpe-without", ("--no-starters",), False),
    ):
        done = run_cli(
            "search", "--space", str(space_file), *COMMON, "--name", name, "--runs-dir", str(runs), "--trials", "1",
            *flags,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (QUEUED in done.stderr.splitlines()) is queued, (name, done.stderr)
        trial = load_study(runs, name).get_trials()[0]  # with --trials 1 the second starter stays queued
        assert (TrialRecord.of(trial).starter == 1) is queued, name


def test_an_interrupted_starter_stays_a_starter_when_it_is_rerun(tmp_path: Path) -> None:
    space_file = tmp_path / "space.toml"
    space_file.write_text(SPACE.replace("epochs = 3", "epochs = 400"))  # far longer than the test waits
    runs = tmp_path / "runs"
    process = start_cli(
        "search", "--space", str(space_file), *COMMON, "--name", "cut", "--runs-dir", str(runs), "--trials", "3",
        "--checkpoint-every", "epoch",
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not any((runs / "cut" / "checkpoints").glob("trial_*.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    trials = load_study(runs, "cut").get_trials()
    first = TrialRecord.of(trials[0])
    assert first.outcome == "interrupted" and first.starter == 1
    again = [t for t in trials if TrialRecord.of(t).resume_of == 0]
    assert len(again) == 1 and again[0].state.name == "WAITING"
    assert TrialRecord.of(again[0]).starter == 1  # so it is still trained to the end, unpruned


def test_a_starter_that_cannot_train_on_the_data_is_skipped_with_its_reason(tmp_path: Path) -> None:
    space_file = tmp_path / "space.toml"
    space_file.write_text(SPACE.replace("[[starter]]", "[constraints]\nmax_params = 2000\n\n[[starter]]", 1))
    runs = tmp_path / "runs"
    done = run_cli(
        "search", "--space", str(space_file), *COMMON, "--name", "m", "--runs-dir", str(runs), "--trials", "1"
    )
    assert done.returncode == 0, done.stderr
    params = count_params(starter_architectures(load_space(space_file))[0], (1, 8, 8), 10)
    assert params > 2000
    assert (
        "queued the space's 1 starter to train first (known-good networks; --no-starters skips them); skipped 1 "
        f"starter that cannot train on digits: starter 1 ({params:,} parameters, over max_params 2,000)"
    ) in done.stderr.splitlines()
    assert TrialRecord.of(load_study(runs, "m").get_trials()[0]).starter == 2
