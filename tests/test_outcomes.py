"""The one outcome vocabulary and the typed trial record, against Optuna and a real search."""

from __future__ import annotations

import io
from pathlib import Path

import optuna
import pytest
from rich.console import Console
from test_search_helpers import infeasible_run

from cnnsearch.cli.view import ProgressState, render, state_from_study
from cnnsearch.outcomes import (
    GROUPS,
    OUTCOMES,
    RECORD_KEYS,
    TrialRecord,
    best_so_far,
    count_groups,
    group_of,
    write_attrs,
)
from cnnsearch.results import runs_frame


def test_every_outcome_has_an_optuna_state_a_group_and_a_phrase() -> None:
    for outcome in OUTCOMES.values():
        assert outcome.state in optuna.trial.TrialState.__members__
        assert outcome.group in GROUPS
        assert outcome.phrase and outcome.phrase != outcome.name
    # PRUNED, not FAIL, for candidates that cannot win: TPE learns from pruned trials only.
    assert {name for name, o in OUTCOMES.items() if o.state == "PRUNED"} >= {"infeasible", "over_budget", "oom", "nan"}
    assert [name for name, o in OUTCOMES.items() if not o.counted] == ["too_slow", "interrupted"]


def test_unrecorded_states_group_like_failures_or_not_at_all() -> None:
    assert group_of("failed") == group_of("stopped") == "failed"
    assert group_of("running") == group_of("waiting") == ""
    assert count_groups(["complete", "pruned", "infeasible", "over_budget", "nan", "running"]) == {
        "trained": 2,
        "skipped": 2,
        "failed": 1,
    }


def test_record_reads_back_what_it_writes_and_tolerates_damage() -> None:
    study = optuna.create_study()
    trial = study.ask()
    write_attrs(
        trial, {"outcome": "complete", "val_acc": [0.5, 0.75], "best_val_acc": 0.75, "seed": 3, "compact": "c8"}
    )
    record = TrialRecord.of(trial)
    assert (record.outcome, record.val_acc, record.best_val_acc, record.seed, record.compact) == (
        "complete",
        [0.5, 0.75],
        0.75,
        3,
        "c8",
    )
    damaged = TrialRecord.from_attrs({"best_val_acc": "n/a", "seed": None, "arch": [1], "params": float("nan")})
    assert damaged.best_val_acc is None and damaged.seed is None and damaged.arch is None and damaged.params is None
    with pytest.raises(KeyError, match="best_acc"):
        write_attrs(trial, {"best_acc": 1.0})
    assert set(RECORD_KEYS) >= {"outcome", "reason", "arch", "val_acc", "worker", "origin"}


def test_best_so_far_takes_complete_trials_only_and_the_earliest_of_a_tie() -> None:
    study = optuna.create_study(direction="maximize")
    for accuracy, state in ((0.9, "PRUNED"), (0.8, "COMPLETE"), (0.8, "COMPLETE"), (0.7, "COMPLETE")):
        trial = study.ask()
        write_attrs(trial, {"best_val_acc": accuracy, "compact": f"t{trial.number}", "params": 500})
        if state == "PRUNED":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, accuracy)
    assert best_so_far(study.get_trials()) == (1, 0.8, "t1", 500)
    assert best_so_far([]) is None


def test_the_live_view_names_the_trial_export_would_take_on_an_exact_tie() -> None:
    """Before: the live view and the search summary named the earlier of two trials with the same
    accuracy while the leaderboard and export took the one with fewer parameters."""
    from cnnsearch.search.progress import SearchEvent

    study = optuna.create_study(direction="maximize")
    for params in (9_000, 3_000, 6_000):  # same accuracy; trial 1 is the cheapest
        trial = study.ask()
        write_attrs(trial, {"best_val_acc": 0.9, "compact": f"t{trial.number}", "params": params})
        study.tell(trial, 0.9)
    trials = study.get_trials()
    assert best_so_far(trials) == (1, 0.9, "t1", 3_000)

    live = ProgressState(name="r", target=3)  # as the worker's events arrive, in finishing order
    for trial in trials:
        live.apply(
            SearchEvent(
                kind="trial_end",
                trial=trial.number,
                compact=f"t{trial.number}",
                outcome="complete",
                best_val_acc=0.9,
                params=trial.user_attrs["params"],
            )
        )
    assert live.best_trial == 1
    seeded = ProgressState(name="r", target=4)  # a resumed view, seeded from the study, then a tie with more params
    state_from_study(study, seeded)
    seeded.apply(
        SearchEvent(kind="trial_end", trial=3, compact="t3", outcome="complete", best_val_acc=0.9, params=4_000)
    )
    assert seeded.best_trial == 1
    seeded.apply(
        SearchEvent(kind="trial_end", trial=4, compact="t4", outcome="complete", best_val_acc=0.9, params=2_000)
    )
    assert seeded.best_trial == 4


def test_an_infeasible_candidate_is_skipped_in_the_live_view_and_in_runs(tmp_path: Path) -> None:
    """Before: the live view counted it as failed/infeasible, `cnnsearch runs` as skipped."""
    run = infeasible_run(tmp_path)
    state = ProgressState(name=run.name, target=1)
    state_from_study(run.load_study(), state)
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(render(state))
    header = console.file.getvalue().splitlines()[1]  # the counts line
    assert "1 skipped" in header and "0 failed" in header, header
    row = runs_frame(run.runs_dir).iloc[0]
    assert (row["skipped"], row["failed"], row["complete"]) == (1, 0, 0)


def test_the_live_view_counts_toward_trials_what_the_search_counts() -> None:
    """A trial Optuna failed without an outcome (a stale heartbeat's) counted toward --trials in the
    view (`[n/target]`) but not in the search, which then ran one more than the view said."""
    from cnnsearch.search.progress import counted_trials

    study = optuna.create_study(direction="maximize")
    for outcome, state in (("complete", "COMPLETE"), (None, "FAIL"), ("interrupted", "FAIL"), ("error", "FAIL")):
        trial = study.ask()
        if outcome:
            write_attrs(trial, {"outcome": outcome, "best_val_acc": 0.5})
        study.tell(trial, 0.5 if state == "COMPLETE" else None, state=optuna.trial.TrialState[state])
    view = ProgressState(name="r", target=10)
    state_from_study(study, view)
    assert view.finished == len(counted_trials(study)) == 2  # complete and error
