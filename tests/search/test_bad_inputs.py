"""Bad input to `cnnsearch search` and `space check` stops before anything runs: one line that
names the problem and the fix, exit 2, no traceback, no run folder. A space that barely fits the
data stops the search after a bounded run of untrainable candidates instead of filling --trials.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

# Five pooling stages cannot fit 8x8 digits; max_params = 10 fits no network at all.
TOO_DEEP = "[network]\nstages = 5\nfilters = [8, 16]\n[stage]\npool = true\n"
TOO_SMALL_A_BUDGET = "[network]\nfilters = [8, 16]\n[constraints]\nmax_params = 10\n"
# About 1 candidate in 100 (filters <= 12) fits max_params: the check before the run passes.
BARELY = "[network]\nstages = 1\nfilters = { low = 1, high = 1000 }\n[head]\ndense_layers = 0\n[constraints]\nmax_params = 300\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refused(result, runs_dir: Path) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert not any(runs_dir.iterdir())
    return lines[0]


@pytest.mark.parametrize(
    "text, causes",
    [
        (TOO_DEEP, "window NxN is larger than its NxN input"),
        (TOO_SMALL_A_BUDGET, "200 × over max_params"),
    ],
)
def test_a_space_no_candidate_of_which_fits_the_data_is_refused(
    tmp_path: Path, runs_dir: Path, text: str, causes: str
) -> None:
    space = write(tmp_path, "space.toml", text)
    line = refused(run_cli("search", "--space", str(space), "--data", "digits", "--runs-dir", str(runs_dir)), runs_dir)
    assert line.startswith(
        f"error: {space}: none of 200 sampled candidates can be trained on digits (1x8x8 images, 10 classes): 200 × "
    )
    assert causes in line
    assert line.endswith("; use fewer stages or pools for small images, or raise max_params/max_flops")
    checked = run_cli("space", "check", str(space), "--data", "digits")
    assert checked.returncode == 2 and checked.stderr.strip().splitlines() == [line]


def test_space_check_data_reports_the_share_that_fits(tmp_path: Path) -> None:
    checked = run_cli("space", "check", "tiny", "--data", "digits")
    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    assert lines[0] == "tiny: valid (9 searched keys); fits digits"
    assert lines[1].startswith("200 candidates at 1x8x8: ")


def test_a_search_stops_after_a_run_of_untrainable_candidates(tmp_path: Path, runs_dir: Path) -> None:
    space = write(tmp_path, "barely.toml", BARELY)
    result = run_cli(
        "search", "--space", str(space), "--data", "digits", "--sampler", "random", "--trials", "200",
        "--name", "barely", "--runs-dir", str(runs_dir),
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: stopped run 'barely': the last 20 candidates could not be trained (20 × N parameters exceed "
            "max_params=N); narrow the space (see `cnnsearch space check SPACE --data digits`) or raise max_params/max_flops"
        )
    )
    outcomes = [json.loads(p.read_text())["outcome"] for p in (runs_dir / "barely" / "trials").glob("*.json")]
    assert 20 <= len(outcomes) < 200 and outcomes.count("over_budget") >= 20


@pytest.mark.parametrize(
    "args, message",
    [
        (["--subset", "5000"], "--subset 5000 is more than the 1437 training images of digits; ask for at most "
         "1437, or drop --subset to search on all of them"),
        (["--timeout", "0"], "--timeout 0: the duration must be positive, e.g. 90s, 20m or 2h"),
        (["--trial-timeout", "0s"], "--trial-timeout 0s: the duration must be positive, e.g. 90s, 20m or 2h"),
    ],
)  # fmt: skip
def test_bad_options_name_themselves(runs_dir: Path, args: list[str], message: str) -> None:
    line = refused(
        run_cli("search", "--space", "tiny", "--data", "digits", "--runs-dir", str(runs_dir), *args), runs_dir
    )
    assert line == f"error: {message}"


def test_an_empty_space_is_refused(tmp_path: Path, runs_dir: Path) -> None:
    space = write(tmp_path, "empty.toml", "# nothing yet\n")
    line = refused(run_cli("search", "--space", str(space), "--data", "digits", "--runs-dir", str(runs_dir)), runs_dir)
    assert line == (
        f"error: {space}: the space searches nothing (0 searched keys: every key is fixed); make at least one key "
        f"a choice or a range, e.g. network.filters = [16, 32], or pass --trials 1 to train its one network"
    )
    assert run_cli("search", "--space", str(space), "--data", "digits", "--runs-dir", str(runs_dir), "--trials", "1",
                   "--epochs", "1", "--device", "cpu", "--name", "one").returncode == 0  # fmt: skip


@pytest.mark.parametrize("word, fix", [("on", "true"), ("off", "false"), ("yes", "true"), ("no", "false")])
def test_a_yaml_boolean_in_toml_gets_the_fix(tmp_path: Path, runs_dir: Path, word: str, fix: str) -> None:
    space = write(tmp_path, "space.toml", f"[network]\nfilters = [8, 16]\nbatch_norm = {word}\n")
    line = refused(run_cli("space", "check", str(space)), runs_dir)
    assert line == (
        f"error: {space}: invalid TOML: Invalid value (at line 3, column 14); TOML booleans are true and false: "
        f"write {fix} instead of {word}"
    )


def test_a_directory_as_space_says_it_is_one(tmp_path: Path, runs_dir: Path) -> None:
    line = refused(
        run_cli("search", "--space", str(tmp_path), "--data", "digits", "--runs-dir", str(runs_dir)), runs_dir
    )
    assert line.startswith(f"error: space file {tmp_path} is a directory; ")
