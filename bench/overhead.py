"""Per-trial overhead of a search: everything a trial costs besides its training steps.

A real search (prepare_run + WorkerLoop, journal storage in a temp folder, default space,
digits, 1 epoch per trial) runs with timers wrapped around library functions from inside this
process; cnnsearch itself is not edited. Each trial's timeline, from its `study.ask()` to the
next one, is cut into phases:

  ask       study.ask() (reads the journal, TPE's relative sampling, creates the trial)
  prepare   ask returned -> train_candidate called: space.sample (one journal write per
            suggested parameter), user attributes, duplicate check, heartbeat thread
  setup     train_candidate called -> first training batch: _build_checked (build + FLOPs),
            latency (latency objective only), Trainer construction, fit set-up
  steps     first batch starts -> last batch ends: the training itself (the work), less
  between   what runs between two epochs inside that window: validation (work), checkpoint,
            pruning callback (multi-epoch trials only)
  epoch_end last batch -> train_candidate returns: the last validation (work), best-epoch
            copy, pruning callback, fit teardown, memory release
  finish    train_candidate returns -> next ask: weights, _finish (user attributes, trial json,
            tell), the ask lock, dead-trial recovery, trial counting

Overhead = period - steps - validation (of every epoch), as a share of the period. Target: <= 5% of a 1-epoch
digits trial on CPU. Trial 0 of each variant (imports, first-call caches) is left out.

`--variants current,before` runs two searches with the same seed side by side, one trial of
each in turn; `before` puts back, by monkeypatching in this process only, what cnnsearch did
before the fixes this benchmark led to (see BEFORE), so their gain is measured side by side
rather than estimated.

    .venv/bin/python bench/overhead.py                  # 16 trials of each variant
    .venv/bin/python bench/overhead.py --variants baseline --trials 30 --profile
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.setup_paths()

NAME = "overhead"
TARGET_PCT = 5.0
SPACE = _common.REPO / "search_spaces" / "default.toml"
PHASES = ("ask", "prepare", "setup", "steps", "between", "epoch_end", "finish")
# What the `before` variant puts back: name -> what cnnsearch did before (commit fb008eb).
BEFORE = {
    "journal": "Optuna's JournalFileBackend: a symlink lock and an fsync for each of the ~50 journal "
    "records of a trial (now cnnsearch.journal.RunJournal: flock, fsync only for a trial's end)",
    "latency": "measure_latency on every trial (now only when the objective includes latency)",
    "flops": "FLOPs from torch's FlopCounterMode on a second build of the network (now spec.forward_flops, "
    "arithmetic, and the checked network is the one trained)",
    "checkpoint": "a resume checkpoint after every epoch but the last (now at most one per 30 s of training)",
}


class Timeline:
    """Marks and timed spans of one variant, filed under the trial that is current."""

    def __init__(self) -> None:
        self.trial = -1
        self.asks: list[tuple[float, float]] = []
        self.call_end: dict[int, float] = {}
        self.spans: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.marks: dict[int, dict[str, float]] = defaultdict(dict)
        self.events: dict[int, list[tuple[float, float]]] = defaultdict(list)  # per-epoch work: (start, s)


class State:
    variant = "current"
    before: frozenset[str] = frozenset()  # BEFORE items in force for the variant running now
    timelines: dict[str, Timeline] = {}

    @classmethod
    def now(cls) -> Timeline:
        return cls.timelines.setdefault(cls.variant, Timeline())


EPOCH_WORK = ("evaluate", "checkpoint_state", "write_checkpoint", "epoch_callback")  # what runs between two epochs


def add_span(name: str, seconds: float, started: float = 0.0) -> None:
    timeline = State.now()
    timeline.spans[timeline.trial][name] += seconds
    timeline.counts[timeline.trial][name] += 1
    if name in EPOCH_WORK:
        timeline.events[timeline.trial].append((started, seconds))


def mark(event: str, *, first: bool = False) -> None:
    timeline = State.now()
    marks = timeline.marks[timeline.trial]
    if not (first and event in marks):
        marks[event] = time.perf_counter()


def timed(name: str, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            add_span(name, time.perf_counter() - started, started)

    return wrapper


def patch_everywhere(name: str, make) -> None:
    """Replace a cnnsearch function in every loaded cnnsearch module that holds it (the
    sub-packages import names from each other, so each holder needs the wrapped one)."""
    holders = [
        module
        for key, module in list(sys.modules.items())
        # a package's attribute of the same name can be its submodule (cnnsearch.train.evaluate)
        if key.startswith("cnnsearch") and not isinstance(getattr(module, name, ModuleType("none")), ModuleType)
    ]
    originals = {id(getattr(module, name)) for module in holders}
    if len(originals) != 1:
        raise RuntimeError(f"bench/overhead.py: {name} is {len(originals)} different objects in cnnsearch")
    wrapped = make(getattr(holders[0], name))
    for module in holders:
        setattr(module, name, wrapped)


def instrument() -> None:
    """Wrap the functions a trial goes through, and the fixes; nothing in cnnsearch's files changes."""
    import optuna
    import pytorch_lightning as pl

    import cnnsearch.search.worker
    import cnnsearch.space.parse as space
    import cnnsearch.train.loop
    import cnnsearch.train.module as train_module
    from cnnsearch.search.worker import WorkerLoop

    original_ask = optuna.study.Study.ask

    def ask(self, *args, **kwargs):
        started = time.perf_counter()
        trial = original_ask(self, *args, **kwargs)
        timeline = State.now()
        timeline.trial += 1
        timeline.asks.append((started, time.perf_counter()))
        return trial

    optuna.study.Study.ask = ask
    optuna.study.Study.tell = timed("study.tell", optuna.study.Study.tell)
    trial_cls = optuna.trial.Trial
    trial_cls.set_user_attr = timed("trial.set_user_attr", trial_cls.set_user_attr)
    for method in ("report", "should_prune"):
        setattr(trial_cls, method, timed(f"trial.{method}", getattr(trial_cls, method)))
    space.SearchSpace.sample = timed("space.sample", space.SearchSpace.sample)
    time_journal()

    for name in (
        "_build_checked",
        "build_model",
        "load_checkpoint",
        "evaluate",
        "_release_memory",
        "measure_latency",
        "checkpoint_state",
        "write_checkpoint",
    ):
        patch_everywhere(name, lambda original, name=name: timed(name, original))
    original_flops = cnnsearch.train.loop.forward_flops

    def forward_flops(arch, input_shape, num_classes):
        if "flops" in State.before:  # as before: torch's counter on a second build
            from cnnsearch.model.build import build_model, count_flops

            return count_flops(build_model(arch, input_shape, num_classes), input_shape)
        return original_flops(arch, input_shape, num_classes)

    patch_everywhere("forward_flops", lambda original: timed("flops", forward_flops))
    original_train = cnnsearch.train.loop.train_candidate

    def train_candidate(*args, **kwargs):
        mark("train_start")
        control = kwargs.get("control")
        if control is not None and "latency" in State.before:
            control.measure_latency = True
        if control is not None and "checkpoint" in State.before:
            control.checkpoint_every_s = 0.0
        if control is not None and control.epoch_callback is not None:
            control.epoch_callback = timed("epoch_callback", control.epoch_callback)
        if control is not None and control.on_measured is not None:
            control.on_measured = timed("on_measured", control.on_measured)
        try:
            return original_train(*args, **kwargs)
        finally:
            mark("train_end")

    patch_everywhere("train_candidate", lambda original: train_candidate)
    pl.Trainer.__init__ = timed("Trainer.__init__", pl.Trainer.__init__)

    module_class = train_module.candidate_module_class()
    module_class.on_train_batch_start = lambda self, batch, index: mark("first_batch", first=True)
    module_class.on_train_batch_end = lambda self, outputs, batch, index: mark("last_batch")

    for method in ("_finish",):
        setattr(WorkerLoop, method, timed(f"WorkerLoop.{method}", getattr(WorkerLoop, method)))
    # keep_best_weights was WorkerLoop._save_weights before the weights moved to search/weights.py,
    # duplicate_of WorkerLoop._duplicate_of before search/dedup.py.
    for name in ("recover_dead_trials", "counted_trials", "write_atomic", "keep_best_weights", "duplicate_of"):
        patch_everywhere(name, lambda original, name=name: timed(name, original))


def time_journal() -> None:
    """Time each journal append, by backend (and put Optuna's file backend back for `before`)."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    import cnnsearch.run.folder as rundir
    from cnnsearch.run.journal import RunJournal

    RunJournal.append_logs = timed("journal append (RunJournal)", RunJournal.append_logs)
    JournalFileBackend.append_logs = timed(
        "journal append + fsync (Optuna file backend)", JournalFileBackend.append_logs
    )
    original = rundir.open_storage

    def open_storage(url, *, journal_path):
        if url == "journal" and "journal" in State.before:
            return JournalStorage(JournalFileBackend(str(journal_path)))
        return original(url, journal_path=journal_path)

    rundir.open_storage = open_storage


def gc_cost(repeats: int = 3) -> tuple[float, float, int, int, float]:
    """gc.collect() milliseconds here (best of a few): as is, all frozen, nothing frozen.

    Also returns the tracked and the already-frozen object counts. The process's freeze state
    is restored afterwards.
    """
    import gc

    def best() -> float:
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            gc.collect()
            timings.append(1000 * (time.perf_counter() - started))
        return min(timings)

    frozen_before = gc.get_freeze_count()
    tracked = len(gc.get_objects())
    as_is = best()
    gc.freeze()
    all_frozen = best()
    gc.unfreeze()
    nothing_frozen = best()
    if frozen_before:
        gc.freeze()  # near enough: cnnsearch froze its import-time heap; put a frozen heap back
    return as_is, all_frozen, tracked, frozen_before, nothing_frozen


def trial_phases(timeline: Timeline, number: int) -> dict[str, float]:
    ask_start, ask_end = timeline.asks[number]
    marks = timeline.marks[number]
    if "first_batch" not in marks or "train_end" not in marks or number not in timeline.call_end:
        return {}
    # Each run_loop call trains one trial and then checks the target once more (lock, recovery,
    # counting): the same work a continuous loop does before its next ask.
    # Validation, checkpoint and pruning callback of every epoch but the last run between the first
    # and the last batch; they are taken out of "steps" into "between".
    between = sum(
        seconds for started, seconds in timeline.events[number] if marks["first_batch"] <= started < marks["last_batch"]
    )
    return {
        "ask": ask_end - ask_start,
        "prepare": marks["train_start"] - ask_end,
        "setup": marks["first_batch"] - marks["train_start"],
        "steps": marks["last_batch"] - marks["first_batch"] - between,
        "between": between,
        "epoch_end": marks["train_end"] - marks["last_batch"],
        "finish": timeline.call_end[number] - marks["train_end"],
        "period": timeline.call_end[number] - ask_start,
    }


def summarize(variant: str, trials: list) -> dict:
    timeline = State.timelines[variant]
    per_trial, rows = [], []
    for number in range(len(timeline.asks)):
        phases = trial_phases(timeline, number)
        attrs = trials[number].user_attrs if number < len(trials) else {}
        if not phases:
            _common.echo(f"{variant} trial {number}: {attrs.get('outcome')} (no training step), left out")
            continue
        spans = timeline.spans[number]
        validation = spans.get("evaluate", 0.0)
        overhead = phases["period"] - phases["steps"] - validation
        pct = 100 * overhead / phases["period"]
        rows.append(
            {
                "variant": variant,
                "trial": number,
                "warmup": number == 0,
                "outcome": attrs.get("outcome", ""),
                "compact": attrs.get("compact", ""),
                **{f"{k}_ms": round(1000 * v, 2) for k, v in phases.items()},
                "validation_ms": round(1000 * validation, 2),
                "overhead_ms": round(1000 * overhead, 2),
                "overhead_pct": round(pct, 2),
            }
        )
        if number > 0:
            per_trial.append((number, phases, spans, overhead, validation, pct))
    if not per_trial:
        raise SystemExit(f"{variant}: no trial trained after the warm-up; run more --trials")
    med = {key: _common.median([p[key] for _, p, *_ in per_trial]) for key in (*PHASES, "period")}
    names = sorted({name for _, _, spans, *_ in per_trial for name in spans})
    return {
        "rows": rows,
        "n": len(per_trial),
        "phases": med,
        "overhead": _common.median([o for _, _, _, o, _, _ in per_trial]),
        "validation": _common.median([v for _, _, _, _, v, _ in per_trial]),
        "pct": _common.median([pct for *_, pct in per_trial]),
        "spans": {n: _common.median([s.get(n, 0.0) for _, _, s, *_ in per_trial]) for n in names},
        "calls": {n: _common.median([timeline.counts[num].get(n, 0) for num, *_ in per_trial]) for n in names},
        "pairs": {num: (o, p["period"]) for num, p, _, o, _, _ in per_trial},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16, help="trials per variant (the first is a warm-up)")
    parser.add_argument("--variants", default="current,before", help="current, before, or both (alternating)")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions (slows it down)")
    parser.add_argument("--quick", action="store_true", help="10 trials per variant")
    args = parser.parse_args()
    if args.quick:
        args.trials = min(args.trials, 10)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or any(v not in ("current", "before") for v in variants):
        parser.error("--variants takes current, before or current,before")

    import torch

    from cnnsearch.search.settings import SearchSettings
    from cnnsearch.search.setup import prepare_run
    from cnnsearch.search.worker import WorkerLoop

    if args.threads:
        torch.set_num_threads(args.threads)
    instrument()
    profiler = None
    with tempfile.TemporaryDirectory(prefix="cnnsearch-overhead-") as runs_dir:
        loops, studies = {}, {}
        for variant in variants:
            State.variant = variant
            State.before = frozenset(BEFORE) if variant == "before" else frozenset()
            settings = SearchSettings(
                name=f"overhead-{variant}",
                space=str(SPACE),
                data=args.data,
                runs_dir=runs_dir,
                trials=args.trials,
                epochs=args.epochs,
                seed=args.seed,
                device=args.device,
            )
            run, info, space = prepare_run(settings)
            loop = WorkerLoop(run, info, space, target=0, device=args.device)
            study, data = loop.open_study(), loop.load_data()
            # One trial per run_loop call, so the variants alternate; the study and the resident
            # data are opened once, as in one continuous loop.
            loop.open_study, loop.load_data = (lambda s=study: s), (lambda d=data: d)
            loops[variant], studies[variant] = loop, study
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        for number in range(args.trials):
            for variant in variants:
                State.variant = variant
                State.before = frozenset(BEFORE) if variant == "before" else frozenset()
                loops[variant].target = number + 1
                loops[variant].run_loop()
                timeline = State.now()
                timeline.call_end[timeline.trial] = time.perf_counter()
                row = trial_phases(timeline, timeline.trial)
                if row:
                    _common.echo(
                        f"{variant:8s} trial {timeline.trial:2d} period {1000 * row['period']:6.0f} ms, "
                        f"steps {1000 * row['steps']:6.0f} ms"
                    )
        if profiler is not None:
            profiler.disable()
        results = {v: summarize(v, studies[v].get_trials(deepcopy=False)) for v in variants}

    # One row per variant (medians): per-trial rows would make the committed CSV grow fast.
    summary_rows = []
    for variant in variants:
        r = results[variant]
        summary_rows.append(
            {
                "variant": variant,
                "fixes": " ".join(sorted(BEFORE)) if variant == "before" else "",
                "data": args.data,
                "epochs": args.epochs,
                "threads": torch.get_num_threads(),
                "trials": r["n"],
                **{f"{phase}_ms": round(1000 * r["phases"][phase], 2) for phase in (*PHASES, "period")},
                "validation_ms": round(1000 * r["validation"], 2),
                "overhead_ms": round(1000 * r["overhead"], 2),
                "overhead_pct": round(r["pct"], 2),
                "target_met": r["pct"] <= TARGET_PCT,
                **{
                    f"{name}_ms": round(1000 * r["spans"].get(name, 0.0), 2)
                    for name in (
                        "_release_memory",
                        "journal append (RunJournal)",
                        "journal append + fsync (Optuna file backend)",
                        "measure_latency",
                        "flops",
                        "space.sample",
                        "trial.set_user_attr",
                    )
                },
            }
        )
    _common.append_rows(NAME, summary_rows)
    base = results[variants[0]]
    lines = [
        f"{args.data}, {args.epochs} epoch(s) per trial, default space, TPE + hyperband, journal storage in a temp "
        f"folder, device {args.device}, {torch.get_num_threads()} torch thread(s); {args.trials} trials per variant, "
        f"trial 0 (warm-up) left out; variants alternate trial by trial. Medians per trial:",
        "",
    ]
    header = ["phase"] + [f"{v} ms" for v in variants] + [f"{v} % of trial" for v in variants]
    phase_rows = []
    for phase in PHASES:
        phase_rows.append(
            [phase]
            + [1000 * results[v]["phases"][phase] for v in variants]
            + [100 * results[v]["phases"][phase] / results[v]["phases"]["period"] for v in variants]
        )
    phase_rows.append(
        ["validation, all epochs (in between and epoch_end; work)"]
        + [1000 * results[v]["validation"] for v in variants]
        + [100 * results[v]["validation"] / results[v]["phases"]["period"] for v in variants]
    )
    phase_rows.append(
        ["**overhead**"] + [1000 * results[v]["overhead"] for v in variants] + [results[v]["pct"] for v in variants]
    )
    phase_rows.append(
        ["period (ask to next ask)"]
        + [1000 * results[v]["phases"]["period"] for v in variants]
        + [100.0 for _ in variants]
    )
    lines += [_common.markdown_table(header, phase_rows), ""]
    names = sorted({n for v in variants for n in results[v]["spans"]}, key=lambda n: -base["spans"].get(n, 0.0))
    lines += [
        "Timed calls (median per trial; nested spans overlap: _build_checked holds a build_model and the "
        "flops; _finish holds set_user_attr, write_atomic and tell):",
        "",
    ]
    lines.append(
        _common.markdown_table(
            ["call"] + [f"{v} calls" for v in variants] + [f"{v} ms" for v in variants] + [f"{variants[0]} % of trial"],
            [
                [n]
                + [results[v]["calls"].get(n, 0) for v in variants]
                + [1000 * results[v]["spans"].get(n, 0.0) for v in variants]
                + [100 * base["spans"].get(n, 0.0) / base["phases"]["period"]]
                for n in names
            ],
        )
    )
    lines.append("")
    for variant in variants:
        lines.append(
            f"- {variant}: overhead {results[variant]['pct']:.1f}% of the trial "
            f"(target <= {TARGET_PCT:g}%: {_common.verdict(results[variant]['pct'] <= TARGET_PCT)})"
        )
    if len(variants) == 2:
        a, b = (results[v] for v in variants)
        common = sorted(set(a["pairs"]) & set(b["pairs"]))
        saved = _common.median([a["pairs"][n][0] - b["pairs"][n][0] for n in common])
        ratio = _common.median([a["pairs"][n][1] / b["pairs"][n][1] for n in common])
        lines.append(
            f"- {variants[0]} against {variants[1]}, paired by trial number (same seed, same candidates): "
            f"overhead {1000 * saved:+.0f} ms per trial (median), trial period x{ratio:.2f}"
        )
        lines.append("- `before` puts back: " + "; ".join(f"**{k}**: {v}" for k, v in BEFORE.items()))
    full_ms, frozen_ms, tracked, frozen_before, all_ms = gc_cost()
    lines.append(
        f"- gc.collect(), which train._release_memory runs after every trial on a CUDA machine: here "
        f"(torch, Lightning, Optuna imported) {frozen_before:,} objects were frozen by cnnsearch and "
        f"{tracked:,} are tracked; a collection takes {full_ms:.1f} ms as things stand, {frozen_ms:.1f} ms "
        f"with everything frozen, {all_ms:.0f} ms with nothing frozen"
    )
    body = "\n".join(lines)
    if profiler is not None:
        import io
        import pstats

        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(45)
        print(text.getvalue())
    _common.append_section(f"overhead: per-trial cost besides training ({args.data}, {args.epochs} epoch)", body)
    print(body)


if __name__ == "__main__":
    main()
