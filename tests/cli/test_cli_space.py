"""Tests for `cnnsearch space check|show|sample`, run as a user runs them: in a subprocess.

Each run costs one Python start (and `sample` seconds of torch import), so independent runs go
in parallel, and the every-space-times-every-size matrix of `sample` runs in process (CliRunner).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPACES = sorted((REPO / "search_spaces").glob("*.toml"))
SHAPES = ("1x8x8", "1x28x28", "3x32x32")
# One torch thread per process: several run at once, each on a batch of one image.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cnnsearch_many(*commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Run `python -m cnnsearch ARGS` for each ARGS at once; results in the same order."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "cnnsearch", *args],
            cwd=REPO,
            env=ENV,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for args in commands
    ]
    results = []
    for args, process in zip(commands, processes):
        stdout, stderr = process.communicate(timeout=180)
        results.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
    return results


def cnnsearch(*args: str) -> subprocess.CompletedProcess:
    return cnnsearch_many(list(args))[0]


def test_check_accepts_every_shipped_space() -> None:
    for path, result in zip(SPACES, cnnsearch_many(*(["space", "check", str(path)] for path in SPACES))):
        assert result.returncode == 0, result.stderr
        assert re.fullmatch(rf"{re.escape(str(path))}: valid \(\d+ searched keys\)\n", result.stdout)


def test_check_with_sample_prints_the_infeasible_share_and_reasons(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text(  # four valid 7x7 convs with pools cannot fit 28x28; one or two stages can
        "[network]\nstages = [1, 4]\npadding = 'valid'\nkernel_size = 7\nfilters = 4\nwidth_multiplier = 1.0\n"
        "[stage]\npool = true\n"
    )
    result = cnnsearch("space", "check", str(path), "--sample", "50", "--input", "1x28x28")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}: valid (1 searched key)"
    share = re.fullmatch(
        r"50 candidates at 1x28x28: (\d+\.\d)% cannot fit the image size, 0\.0% exceed max_params/max_flops", lines[1]
    )
    assert share and 0 < float(share[1]) < 100
    assert re.fullmatch(r" +\d+ × convN: kernel NxN is larger than its NxN input", lines[2])


def test_show_prints_every_parameter_with_its_meaning() -> None:
    result = cnnsearch("space", "show", str(REPO / "search_spaces" / "default.toml"))
    assert result.returncode == 0, result.stderr
    for cell in ("train.lr", "(log)", "peak learning rate", "stage<i>.kernel_size", "constraints.max_params"):
        assert cell in result.stdout


def assert_sampled(output: str, shape: str, where: str) -> None:
    assert f"3 candidates for {shape} input, 10 classes" in output, where
    rows = re.split(r"│ [123] │", output)[1:]
    assert len(rows) == 3, where
    for row in rows:  # every candidate is either ok or has a reason (wide rows may wrap)
        assert re.search(r"\bok\b|cannot fit|exceed", row), where


def test_sample_subprocess_prints_candidates() -> None:
    # One real run (a subprocess pays seconds for the torch import); every space and size below.
    result = cnnsearch(
        "space", "sample", str(REPO / "search_spaces" / "cifar.toml"), "--n", "3", "--input", "1x8x8", "--classes", "10"
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert_sampled(result.stdout, "1x8x8", result.stderr)


@pytest.mark.parametrize("shape", SHAPES)
def test_sample_command_for_every_space_and_input_size(shape: str) -> None:
    from typer.testing import CliRunner

    from cnnsearch.cli import app

    for path in SPACES:  # in process: the same command, without paying for a torch import each time
        result = CliRunner().invoke(
            app, ["space", "sample", str(path), "--n", "3", "--input", shape, "--classes", "10"]
        )
        where = f"{path.name} at {shape}: {result.exception!r}"
        assert result.exit_code == 0, where
        assert_sampled(result.stdout, shape, where)


def test_sample_gives_the_reason_a_candidate_cannot_fit(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cnnsearch.cli import app

    path = tmp_path / "deep.toml"
    path.write_text(
        "[network]\nstages = [1, 2]\npadding = 'valid'\nkernel_size = 7\nfilters = 4\n[stage]\npool = true\n"
    )
    result = CliRunner().invoke(app, ["space", "sample", str(path), "--n", "8", "--input", "1x8x8"])
    assert result.exit_code == 0, repr(result.exception)
    assert "c4k7v-mp2-gap relu+bn" in result.stdout  # one stage fits: 8 -> 2 -> 1
    assert "cannot fit 1x8x8 input: conv2: kernel 7x7 is larger than its 1x1 input" in result.stdout


def test_broken_file_exits_2_with_every_problem_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[network]\nfiltres = 32\n[stage]\nkernel_size = 4\n")
    result = cnnsearch("space", "check", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {path}: [network] filtres: unknown key; did you mean 'filters'?",
        f"{path}: [stage] kernel_size: 4 is even; use odd sizes",
    ]


def test_missing_file_and_bad_input_shape_exit_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    tiny = str(REPO / "search_spaces" / "tiny.toml")
    not_found, directory, bad_shape = cnnsearch_many(
        ["space", "check", str(missing)],
        ["space", "show", str(tmp_path)],
        ["space", "sample", tiny, "--input", "28x28"],
    )
    hint = "pass an existing .toml file or a shipped space: default, tiny, cifar, sequence"
    assert not_found.returncode == 2
    assert not_found.stderr.splitlines() == [f"error: space file not found: {missing}; {hint}"]
    assert directory.returncode == 2
    assert directory.stderr.splitlines() == [f"error: space file {tmp_path} is a directory; {hint}"]
    assert bad_shape.returncode == 2
    assert bad_shape.stderr.splitlines() == [
        "error: --input: input shape must look like CxHxW (e.g. 1x28x28), but got '28x28'"
    ]
    assert bad_shape.stdout == ""
