"""The leaderboard frame and everything drawn from it, on real Optuna studies in a temp dir.

No torch: synthetic runs (tests/synthetic.py) add finished trials through Optuna's API.
"""

from __future__ import annotations

import copy
import html
import io
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from rich.console import Console
from rich.text import Text
from synthetic import make_synthetic_run  # tests/ is on sys.path (conftest.py's folder)

from cnnsearch import results as report
from cnnsearch.errors import UserError
from cnnsearch.results.html import _html_table
from cnnsearch.results.leaderboard import COLUMNS
from cnnsearch.results.plots import _cost_section, _Images, _log_ticks, _tick_label
from cnnsearch.run.folder import RunDir
from cnnsearch.run.liveness import HEARTBEAT_GRACE_S
from cnnsearch.spec import Architecture

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[2]


def render(renderable, width: int = 200) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def small(shared_runs) -> RunDir:
    return make_synthetic_run(shared_runs, "small", 60, seed=1, running=1)


@pytest.fixture(scope="module")
def multi(shared_runs) -> RunDir:
    return make_synthetic_run(shared_runs, "multi", 60, seed=2, multi_objective=True)


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> RunDir:
    return make_synthetic_run(tmp_path_factory.mktemp("big"), "big", 1000, seed=3)


def without_latency(runs_dir: Path, name: str, n_trials: int, **options) -> RunDir:
    """A synthetic run as an accuracy-only search now writes it: `latency_ms` is None in every trial."""
    source = make_synthetic_run(runs_dir / "_sources", name, n_trials, **options)
    run = RunDir(runs_dir, name)
    info = source.read_info()
    run.write_info(info)
    trials = []
    for trial in source.load_study(info).get_trials():
        trial = copy.deepcopy(trial)
        if "latency_ms" in trial.user_attrs:
            trial.user_attrs["latency_ms"] = None
        trials.append(trial)
    directions = [direction.name.lower() for direction in source.load_study(info).directions]
    study = optuna.create_study(study_name=name, storage=run.open_storage(info), directions=directions)
    study.add_trials(trials)
    return run


@pytest.fixture(scope="module")
def no_latency(shared_runs) -> RunDir:
    return without_latency(shared_runs, "acc-only", 60, seed=9, running=1)


# ---- the frame ---------------------------------------------------------------------------
def test_frame_columns_order_and_ranking(small):
    frame = report.leaderboard_frame(small)
    assert list(frame.columns) == list(COLUMNS)
    assert frame["rank"].tolist() == list(range(1, len(frame) + 1))
    # Trained trials first, then those the trial timeout stopped, each best first.
    states = frame["state"].tolist()
    tiers = [state == "timeout" for state in states]
    assert tiers == sorted(tiers)
    for timed_out in (False, True):
        accuracies = [acc for acc, tier in zip(frame["val_acc"].tolist(), tiers) if tier == timed_out]
        assert accuracies == sorted(accuracies, reverse=True)
    assert not frame["val_acc"].isna().any()
    for state in states:
        assert state in ("complete", "timeout") or re.fullmatch(r"duplicate of #\d+", state)
    assert "pruned" not in set(frame["state"]), "pruned trials only with --all"
    # Ties on accuracy: fewer params first.
    for (_, upper), (_, lower) in zip(frame.iloc[:-1].iterrows(), frame.iloc[1:].iterrows()):
        if upper["val_acc"] == lower["val_acc"] and pd.notna(upper["params"]) and pd.notna(lower["params"]):
            assert upper["params"] <= lower["params"]


def test_the_training_column_tells_apart_trials_the_arch_column_cannot(small):
    """Two trials of one architecture may differ in learning rate or augmentation: the arch
    column alone shows them as twins; `training` carries what differs."""
    frame = report.leaderboard_frame(small, include_all=True)
    info = small.read_info()
    by_number = {trial.number: trial for trial in small.load_study(info).get_trials()}
    checked = 0
    for number, training in zip(frame["trial"].tolist(), frame["training"].tolist()):
        data = by_number[number].user_attrs.get("arch")
        if not isinstance(data, dict):
            assert training == ""
            continue
        arch = Architecture.from_dict(data)
        lr = f"lr{arch.train.lr:.1e}".replace("e-0", "e-")
        assert training.startswith(f"{arch.train.optimizer} {lr} "), (training, arch.train)
        assert f" b{arch.train.batch_size}" in training
        assert (" | " in training) == bool(arch.augment.translate or arch.augment.flip or arch.augment.cutout)
        checked += 1
    assert checked >= 10
    assert frame["training"].nunique() > 1, "the synthetic trials differ in their learning rates"


def test_pruned_rows_show_where_they_stopped_after_every_trained_trial(small):
    frame = report.leaderboard_frame(small, include_all=True)
    pruned = frame[frame["state"] == "pruned"]
    assert len(pruned) > 0
    assert (pruned["epochs"] < 8).all()
    trained = frame[frame["state"].str.startswith(("complete", "duplicate"))]
    assert pruned["rank"].min() > trained["rank"].max()


def test_include_all_adds_every_trial_with_its_reason(small):
    ranked = report.leaderboard_frame(small)
    everything = report.leaderboard_frame(small, include_all=True)
    assert list(everything.columns) == [*COLUMNS, "reason"]
    assert len(everything) == 61  # 60 finished + 1 running
    assert len(everything) > len(ranked)
    unranked = everything[everything["rank"].isna()]
    states = set(unranked["state"])
    assert {"infeasible", "failed: nan", "failed: error", "running"} <= states
    assert (unranked["reason"].str.len() > 0).all()
    infeasible = unranked[unranked["state"] == "infeasible"].iloc[0]
    assert "cannot fit" in infeasible["reason"]
    # The ranked rows come first, in the same order as without include_all.
    assert everything["trial"].tolist()[: len(ranked)] == ranked["trial"].tolist()


def test_multi_objective_front_is_not_dominated(multi):
    frame = report.leaderboard_frame(multi)
    assert list(frame.columns) == ["rank", "front", *COLUMNS[1:]]
    assert frame["front"].dtype == bool
    front = frame[frame["front"]]
    assert len(front) >= 2
    # The front is ranked first.
    assert frame["front"].tolist() == [True] * len(front) + [False] * (len(frame) - len(front))
    trained = frame[frame["state"] == "complete"]
    for _, member in front.iterrows():
        for _, other in trained.iterrows():
            dominates = (
                other["val_acc"] >= member["val_acc"]
                and other["params"] <= member["params"]
                and (other["val_acc"] > member["val_acc"] or other["params"] < member["params"])
            )
            assert not dominates, f"trial {other['trial']} dominates front member {member['trial']}"


def test_pareto_ranks_by_hand():
    points = [[0.9, 100], [0.8, 50], [0.85, 200], [0.7, 300], [0.9, 100]]
    assert report.pareto_ranks(points, [True, False]).tolist() == [1, 1, 2, 3, 1]


def test_sort_and_cut(small):
    frame = report.leaderboard_frame(small)
    by_params = report.sort_and_cut(frame, sort="params", top=5)
    assert len(by_params) == 5
    assert by_params["params"].tolist() == sorted(frame["params"].dropna().tolist())[:5]
    # Timed-out trials rank after the trained ones; sorting by val_acc mixes them in, ties kept in rank order.
    by_accuracy = frame.sort_values("val_acc", ascending=False, kind="stable")["trial"].tolist()
    assert report.sort_and_cut(frame, sort="val_acc", top=None)["trial"].tolist() == by_accuracy
    with pytest.raises(UserError) as caught:
        report.sort_and_cut(frame, sort="parms", top=None)
    message = str(caught.value)
    assert "valid columns: rank, trial, state, val_acc, val_ci, tied, params" in message
    assert "did you mean 'params'?" in message
    with pytest.raises(UserError) as caught:
        report.sort_and_cut(frame, sort=None, top=0)
    assert str(caught.value) == "--top must be at least 1, but got 0"


def test_board_and_frame_hold_the_same_rows_and_sort_alike(small, multi):
    for run in (small, multi):
        for include_all in (False, True):
            board = report.leaderboard_rows(run, include_all=include_all)
            frame = report.leaderboard_frame(run, include_all=include_all)
            assert board.columns == list(frame.columns)
            assert report.display_cells(board) == report.display_cells(frame)
            assert report.board_frame(board).equals(frame)
            for column in frame.columns:
                by_board = report.sort_and_cut(board, sort=column, top=25)
                by_frame = report.sort_and_cut(frame, sort=column, top=25)
                assert by_board.column("trial") == by_frame["trial"].tolist(), column
                assert render(report.leaderboard_table(by_board, title="t", width=120), width=120) == render(
                    report.leaderboard_table(by_frame, title="t", width=120), width=120
                )
    with pytest.raises(UserError, match="did you mean 'params'"):
        report.sort_and_cut(report.leaderboard_rows(small), sort="parms")
    with pytest.raises(UserError, match="--top must be at least 1, but got 0"):
        report.sort_and_cut(report.leaderboard_rows(small), top=0)


# ---- formats -------------------------------------------------------------------------------
def test_csv_json_markdown_render_the_same_rows(small):
    frame = report.sort_and_cut(report.leaderboard_frame(small, include_all=True), sort=None, top=12)

    parsed = pd.read_csv(io.StringIO(report.frame_to_text(frame, "csv")))
    assert list(parsed.columns) == list(frame.columns)
    assert parsed["trial"].tolist() == frame["trial"].tolist()
    assert parsed["val_acc"].round(6).tolist() == frame["val_acc"].round(6).tolist()

    records = json.loads(report.frame_to_text(frame, "json"))
    assert isinstance(records, list) and len(records) == len(frame)
    assert records[0]["trial"] == int(frame["trial"].iloc[0])
    assert records[0]["rank"] == 1

    lines = report.frame_to_text(frame, "markdown").strip().splitlines()
    assert lines[0] == "| " + " | ".join(frame.columns) + " |"
    assert re.fullmatch(r"\|( :?-{3,}:? \|)+", lines[1])
    assert len(lines) == 2 + len(frame)
    cells = [len(re.findall(r"(?<!\\)\|", line)) for line in lines]
    assert len(set(cells)) == 1


def test_unknown_format_is_a_user_error(small):
    with pytest.raises(UserError, match="use one of: csv, json, markdown"):
        report.frame_to_text(report.leaderboard_frame(small), "yaml")


def test_markup_in_user_strings_is_kept(small):
    frame = report.leaderboard_frame(small).head(3).copy()
    frame.loc[0, "arch"] = "[c-c-p] c8k3-[bold]gap"
    text = render(report.leaderboard_table(frame, title="[run]"))
    assert "[c-c-p] c8k3-[bold]gap" in text
    assert "[run]" in text
    assert "%" in text  # val_acc as percent


def test_humanise():
    assert report.humanise(999) == "999"
    assert report.humanise(12_345) == "12.3K"
    assert report.humanise(4_500_000) == "4.5M"
    assert report.humanise(999_960) == "1.0M"
    assert report.humanise(None) == "-"


def test_narrow_terminal_keeps_the_arch_column(small):
    frame = report.leaderboard_frame(small).head(5)
    text = render(report.leaderboard_table(frame, width=80), width=80)
    assert "arch" in text
    assert "flops" not in text


# ---- empty runs ------------------------------------------------------------------------------
def test_empty_run_says_no_finished_trials(runs_dir):
    run = make_synthetic_run(runs_dir, "empty", 0)
    frame = report.leaderboard_frame(run)
    assert frame.empty and list(frame.columns) == list(COLUMNS)
    table = report.leaderboard_table(frame, title="empty")
    assert isinstance(table, Text)
    assert render(table).strip() == "No finished trials yet."
    assert "No finished trials yet." in report.frame_to_text(frame, "markdown")
    assert json.loads(report.frame_to_text(frame, "json")) == []
    page = report.write_report(run).read_text()
    assert "No finished trials yet." in page


# ---- a big run -------------------------------------------------------------------------------
def test_big_run_frame_without_torch(big):
    frame = report.leaderboard_frame(big)
    assert 500 < len(frame) < 1000  # the trained trials of 1,000
    code = textwrap.dedent(
        f"""
        import sys
        from cnnsearch.results.leaderboard import leaderboard_frame
        from cnnsearch.results.render import leaderboard_table
        from cnnsearch.results.detail import trial_detail
        from cnnsearch.run.folder import RunDir
        run = RunDir({str(big.runs_dir)!r}, "big")
        frame = leaderboard_frame(run, include_all=True)
        leaderboard_table(frame)
        trial_detail(run, 0)
        print(len(frame), 'torch' in sys.modules, 'lightning' in sys.modules, 'pytorch_lightning' in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1000", "False", "False", "False"]


def test_report_imports_neither_pandas_nor_numpy_and_the_table_needs_no_pandas(big):
    code = textwrap.dedent(
        """
        import sys
        import cnnsearch.results.leaderboard, cnnsearch.results.render, cnnsearch.results.facts
        print(*(name in sys.modules for name in ("pandas", "numpy", "optuna", "torch")))
        sys.argv = ["cnnsearch", *sys.argv[1:]]
        from cnnsearch.cli import main
        try:
            main()
        except SystemExit:
            pass
        print(*(name in sys.modules for name in ("pandas", "torch")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "leaderboard", "big", "--runs-dir", str(big.runs_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "False False False False"  # importing the report loads none of them
    assert lines[-1] == "False False"  # the whole table command: no pandas, no torch
    assert "showing the best 30 of" in done.stderr and "val acc" in done.stdout


# ---- runs without latency (accuracy-only searches do not measure it) -----------------------
MISSING_CELL = re.compile(r"[│|>]\s*(nan|NaN|None|<NA>)\s*[│|<]")  # a table cell that says nan / None


def test_table_leaves_out_latency_when_no_row_shown_has_one(no_latency, small):
    board = report.leaderboard_rows(no_latency, include_all=True)
    assert set(board.column("latency_ms")) == {None}
    for table in (board, report.board_frame(board), report.sort_and_cut(board, sort="latency_ms", top=5)):
        text = render(report.leaderboard_table(table, title="accuracy only"))
        assert "latency" not in text
        assert not MISSING_CELL.search(text)
        assert "val acc" in text and "flops" in text and "train s" in text
    html_table = _html_table(board)
    assert "latency" not in html_table and not MISSING_CELL.search(html_table)
    # Machine-readable formats keep every column: empty in csv, null in json.
    assert json.loads(report.frame_to_text(report.board_frame(board), "json"))[0]["latency_ms"] is None
    assert "latency_ms" in report.frame_to_text(report.board_frame(board), "csv").splitlines()[0]

    # A run with latencies: the column stays while any row shown has one, and goes when none does.
    frame = report.leaderboard_frame(small).head(6).copy()
    frame.loc[1:, "latency_ms"] = float("nan")
    assert "latency ms" in render(report.leaderboard_table(frame))
    frame["latency_ms"] = float("nan")
    assert "latency ms" not in render(report.leaderboard_table(frame))


def test_trial_detail_watch_and_report_without_latency(no_latency):
    best = report.leaderboard_rows(no_latency).rows[0]["trial"]
    text = render(report.trial_detail(no_latency, best), width=200)
    assert "latency" not in text and not re.search(r"\b(None|nan)\b", text)
    assert re.search(r"val acc +\d+\.\d\d%", text) and "flops" in text
    watch = render(report.watch_view(no_latency), width=200)
    assert "top 10" in watch and "latency" not in watch and not MISSING_CELL.search(watch)

    page = report.write_report(no_latency).read_text()
    assert "Accuracy against cost" in page and "Front on accuracy and params" in page
    assert "latency" not in page.split("<h2>Leaderboard</h2>")[1].split("</table>")[0]
    assert "Front on accuracy and latency_ms" not in page
    assert "validation accuracy against params'" in page  # the plot's alt text names its one panel
    assert (no_latency.path / "report" / "accuracy_vs_cost.png").stat().st_size > 1000


def test_cli_leaderboard_without_latency(no_latency):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnsearch",
            "leaderboard",
            "acc-only",
            "--all",
            "--top",
            "100",
            "--runs-dir",
            str(no_latency.runs_dir),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    assert "acc-only: 61 trials" in done.stdout
    assert "latency" not in done.stdout and not MISSING_CELL.search(done.stdout)
    assert "failed: nan" in done.stdout  # every kind of trial is listed


# ---- one trial -------------------------------------------------------------------------------
def test_trial_detail_shows_layers_settings_and_curve(small):
    best = int(report.leaderboard_frame(small)["trial"].iloc[0])
    text = render(report.trial_detail(small, best), width=160)
    for expected in (
        "conv1",
        "classifier",
        "total",
        "output shape",
        "lr",
        "translate",
        "train.lr",
        "validation accuracy by epoch",
    ):
        assert expected in text
    assert re.search(r"\|\S*\*", text)  # chart points after the y axis
    assert " +----" in text


def test_trial_detail_of_infeasible_and_archless_trials(runs_dir):
    run = make_synthetic_run(runs_dir, "odd", 30, seed=4)
    frame = report.leaderboard_frame(run, include_all=True)
    infeasible = int(frame[frame["state"] == "infeasible"]["trial"].iloc[0])
    assert "cannot be built" in render(report.trial_detail(run, infeasible), width=200)

    study = run.load_study()
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            user_attrs={"outcome": "error", "reason": "ValueError: bad [space] file"},
        )
    )
    text = render(report.trial_detail(run, 30), width=200)
    assert "No architecture recorded" in text
    assert "ValueError: bad [space] file" in text


def test_unknown_trial_is_a_user_error(runs_dir):
    run = make_synthetic_run(runs_dir, "x", 6)
    with pytest.raises(UserError) as caught:
        report.trial_detail(run, 7)
    assert str(caught.value) == "run 'x' has no trial 7; trials are numbered 0..5"


def test_latency_says_how_many_images(small):
    trial = next(t for t in small.load_study().get_trials() if t.user_attrs.get("latency_ms") is not None)
    batch = trial.user_attrs["arch"]["train"]["batch_size"]
    text = render(report.trial_detail(small, trial.number), width=200)
    assert f"{trial.user_attrs['latency_ms']:.3f} ms per batch of {min(batch, 256)} images" in text


def test_text_chart():
    chart = report.text_chart([0.2, 0.5, 0.7, 0.8], width=20, height=5)
    lines = chart.splitlines()
    assert len(lines) == 5 + 2
    assert lines[0].startswith("0.8 |")
    assert lines[4].startswith("0.2 |")
    assert chart.count("*") == 4
    assert lines[-1].strip().split() == ["1", "4"]
    assert report.text_chart([]) == "(no values)"


# ---- watch -----------------------------------------------------------------------------------
def test_watch_view_lists_running_trials(small, multi):
    # The module's run was made minutes ago on a loaded machine: beat for its live worker, as it would.
    for trial in small.load_study().get_trials(deepcopy=False):
        if small.heartbeat_file(trial.number).is_file():
            os.utime(small.heartbeat_file(trial.number))
    text = render(report.watch_view(small), width=200)
    assert "top 10" in text and "running" in text
    assert re.search(r"\d / 8", text)
    assert "No trials running." in render(report.watch_view(multi), width=200)


def _set_worker(run: RunDir, number: int, worker: str) -> None:
    study = run.load_study()
    trial = study.get_trials(deepcopy=False)[number]
    study._storage.set_trial_user_attr(trial._trial_id, "worker", worker)


def test_running_trials_of_gone_workers_show_as_stopped(runs_dir):
    run = make_synthetic_run(runs_dir, "killed", 10, seed=8, running=3)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its process id now belongs to no process
    here = socket.gethostname()
    _set_worker(run, 10, f"{here}:{finished.pid}")  # killed on this machine: seen by its pid at once
    _set_worker(run, 11, f"{here}:{os.getpid()}")  # alive on this machine
    _set_worker(run, 12, "elsewhere:123")  # on another machine: its heartbeat went silent
    old = time.time() - 2 * HEARTBEAT_GRACE_S
    os.utime(run.heartbeat_file(12), (old, old))

    frame = report.leaderboard_frame(run, include_all=True).set_index("trial")
    assert frame.loc[10, "state"] == "stopped" and frame.loc[12, "state"] == "stopped"
    assert frame.loc[11, "state"] == "running"
    assert re.fullmatch(r"worker gone; resumes on the next search \(it was at epoch \d of 8\)", frame.loc[10, "reason"])
    assert re.search(r"outcome +stopped", render(report.trial_detail(run, 10), width=200))
    assert "1 running, 2 stopped (worker gone; resumes on the next search)" in render(report.watch_view(run), width=200)

    (row,) = (row for _, row in report.runs_frame(runs_dir).iterrows() if row["name"] == "killed")
    assert row["running"]  # trial 11
    assert row["note"] == "2 trials stopped (worker gone; resumes on the next search)"
    _set_worker(run, 11, f"{here}:{finished.pid}")
    (row,) = (row for _, row in report.runs_frame(runs_dir).iterrows() if row["name"] == "killed")
    assert not row["running"]
    # `leaderboard --watch` in a log (no terminal) stops once nothing runs: before, it waited for
    # ever on the RUNNING trials of workers that were gone.
    from conftest import run_cli

    watched = run_cli("leaderboard", "killed", "--watch", "--runs-dir", str(runs_dir), timeout=60)
    assert watched.returncode == 0 and "no trial is running; stopped watching" in watched.stderr, watched.stderr


def test_log_ticks_are_few_round_and_humanised():
    assert [_tick_label(v) for v in _log_ticks(12_000, 480_000)] == ["20K", "50K", "100K", "200K"]
    assert [_tick_label(v) for v in _log_ticks(3_000, 9_000_000)] == ["10K", "100K", "1M"]
    assert [_tick_label(v) for v in _log_ticks(12_000, 18_000)] == ["12K", "18K"]
    assert len(_log_ticks(10, 1e12)) <= 6


def test_cost_plot_tick_labels_do_not_overlap(monkeypatch, tmp_path):
    import random

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    rng = random.Random(0)
    facts = [  # params spanning just over a decade: matplotlib labels every minor tick there
        report.TrialFacts(
            number=number,
            outcome="complete",
            state="complete",
            val_acc=rng.uniform(0.8, 0.95),
            params=rng.randint(2_000, 30_000),
            flops=None,
            latency_ms=None,
            train_s=1.0,
            epochs=8,
            arch="c8k3-gap",
            reason="",
        )
        for number in range(30)
    ]
    figures = []
    monkeypatch.setattr(_Images, "embed", lambda self, figure, name, alt: figures.append(figure) or "")
    _cost_section(facts, _Images(tmp_path))
    (figure,) = figures
    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw(renderer)
    (axis,) = figure.axes
    low, high = axis.get_xlim()
    labels = [
        label
        for label in axis.get_xticklabels(which="both")
        if label.get_visible() and label.get_text() and low <= label.get_position()[0] <= high
    ]
    boxes = sorted((label.get_window_extent(renderer) for label in labels), key=lambda box: box.x0)
    assert len(boxes) >= 2
    assert all(left.x1 < right.x0 for left, right in itertools.pairwise(boxes))
    assert all(re.fullmatch(r"\d+(\.\d)?[KMG]?", label.get_text()) for label in labels)


# ---- the HTML report -------------------------------------------------------------------------
def test_write_report_is_self_contained(small):
    model = small.path / "export" / "model.json"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_text(json.dumps({"test_accuracy": 0.9612, "trial": 3}))
    info = small.read_info()
    info.command = "cnnsearch search --name small <script>alert(1)</script>"
    small.write_info(info)

    path = report.write_report(small)
    assert path == small.path / "report.html"
    page = path.read_text()
    assert "data:image/png;base64," in page
    best_arch = report.leaderboard_frame(small)["arch"].iloc[0]
    assert html.escape(best_arch) in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "96.12%" in page
    assert "Hyperparameter importance" in page
    assert "Counts the trials that trained to the end (complete ones and duplicates) only" in page
    for name in ("best_so_far", "time", "accuracy_vs_cost", "importance", "learning_curves"):
        assert (small.path / "report" / f"{name}.png").stat().st_size > 1000


def test_write_report_with_too_few_trials_for_importance(runs_dir):
    run = make_synthetic_run(runs_dir, "one", 1, seed=5)
    page = report.write_report(run).read_text()
    assert "Not enough trials" in page


# ---- all runs --------------------------------------------------------------------------------
def test_runs_frame_lists_runs_and_notes_broken_ones(tmp_path):
    make_synthetic_run(tmp_path, "alpha", 20, seed=6)
    make_synthetic_run(tmp_path, "beta", 10, seed=7, running=1)
    broken = tmp_path / "gamma"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")

    frame = report.runs_frame(tmp_path)
    assert frame["name"].tolist() == ["alpha", "beta", "gamma"]
    alpha, beta, gamma = (row for _, row in frame.iterrows())
    assert alpha["trials"] == 20 and beta["trials"] == 11
    assert alpha["complete"] + alpha["pruned"] + alpha["skipped"] + alpha["failed"] == 20
    assert 0 < alpha["best_val_acc"] <= 1
    assert alpha["data"] == "digits" and alpha["last_activity"].startswith("2026-")
    assert not alpha["running"] and beta["running"]
    assert "not a valid run file" in gamma["note"]
    assert "gamma" in render(report.runs_table(frame))
    assert report.runs_frame(tmp_path / "nothing").empty


def test_two_objective_sweep_matches_pairwise_sorting():
    import numpy as np

    rng = np.random.default_rng(0)
    for trial in range(60):
        points = rng.integers(0, 6, size=(rng.integers(1, 30), 2)).astype(float)  # many ties
        if trial % 3 == 0:
            points[rng.integers(0, len(points))] = np.nan
        pairwise = report.pareto_ranks(np.column_stack([points, np.zeros(len(points))]), [True, False, False])
        assert report.pareto_ranks(points, [True, False]).tolist() == pairwise.tolist()


class _KeptFigures(_Images):
    """The report's image writer, keeping each figure instead of encoding it."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.figures: dict[str, Any] = {}

    def embed(self, figure: Any, name: str, alt: str) -> str:
        self.figures[name] = figure
        return ""


def _fact(number: int, val_acc: float, params: int, curve: list[float], outcome: str = "complete") -> Any:
    return report.TrialFacts(
        number=number, outcome=outcome, state=outcome, val_acc=val_acc, params=params, flops=None,
        latency_ms=None, train_s=1.0, epochs=len(curve), arch="c8k3-gap", reason="", curve=curve,
    )  # fmt: skip


def test_every_pareto_front_member_is_drawn_however_low(tmp_path: Path) -> None:
    # Many good expensive trials and one cheap bad one: the cheap one is on the front.
    facts = [_fact(number, 0.90 + number / 1000, 20_000 + number, [0.9]) for number in range(40)]
    facts.append(_fact(40, 0.30, 346, [0.3]))
    images = _KeptFigures(tmp_path)
    _cost_section(facts, images)
    (axis,) = images.figures["accuracy_vs_cost"].axes
    low, high = axis.get_ylim()
    assert low <= 30.0 <= high, f"the front member at 30% is off the chart ({low:.1f}..{high:.1f})"


def test_learning_curves_of_a_one_epoch_run_read_whole_epochs_and_say_what_they_show(tmp_path: Path) -> None:
    from cnnsearch.results.leaderboard import Board
    from cnnsearch.results.plots import _curves_section

    facts = [_fact(number, 0.5 + number / 100, 1000, [0.5 + number / 100]) for number in range(3)]
    board = Board(["trial"], [{"trial": fact.number} for fact in reversed(facts)])
    images = _KeptFigures(tmp_path)
    _curves_section(board, facts, images)
    (axis,) = images.figures["learning_curves"].axes
    ticks = [tick for tick in axis.get_xticks() if axis.get_xlim()[0] <= tick <= axis.get_xlim()[1]]
    assert ticks == [1.0], ticks
    assert axis.get_title() == "learning curves: top 3"  # nothing was pruned
