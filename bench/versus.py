"""Head to head: cnnsearch against a hand-written Optuna + Lightning search, end to end.

Every contender gets the same Fashion-MNIST training images and the same wall-clock budget,
counted from the start of its process to its final model on disk (cnnsearch's export retrain
counts), and every final model is scored here, by loading its TorchScript file, on the official
10,000 t10k test images. Contenders take turns per seed (seed 0 of each, then seed 1, ...).

The contenders are one table (CONTENDERS); `--contender NAME=ARGS` appends cnnsearch flags to a
contender of the table, or adds a new cnnsearch contender with them, e.g.
`--contender seq="--space search_spaces/sequence.toml"` or `--contender gp="--sampler gp"`.

The peer (bench/peers/optuna_lightning.py) is given the exact images cnnsearch's `--subset` and
split pick for the seed (train and validation), so their validation accuracies are comparable.

    .venv/bin/python bench/versus.py                          # 10,000 images, 600 s, 3 seeds
    .venv/bin/python bench/versus.py --full                   # all 60,000 images, 3600 s
    .venv/bin/python bench/versus.py --budget 90 --seeds 1 --train-images 2000 --no-record   # smoke run
    .venv/bin/python bench/versus.py --contenders cnnsearch,cnnsearch-random,gp --contender gp="--sampler gp"
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

_common.setup_paths()
from versus_run import END_TO_END, OVER_SHARE, Contender, Result, run_cnnsearch, run_peer, score

NAME = "versus"
CONTENDERS = {
    contender.name: contender
    for contender in (
        Contender("cnnsearch", "cnnsearch"),  # its defaults: TPE, ASHA, the default space
        Contender("cnnsearch-random", "cnnsearch", ("--sampler", "random", "--pruner", "none")),
        Contender("peer", "peer"),  # bench/peers/optuna_lightning.py
    )
}
TEST_IMAGES = 10_000  # Fashion-MNIST's official t10k set
LEAD_TARGET = {False: 3.0, True: 1.0}  # --full or not -> points of test accuracy cnnsearch needs over the peer
FULL_MIN_ACCURACY = 0.945
TARGET_RATIO = 1 / 3  # TPE with pruning to random's final best, over random's own time


def parse_contenders(names: str, extras: list[str]) -> list[Contender]:
    """The contenders to run, in order: `names` (comma-separated), then those only `extras` name."""
    table = dict(CONTENDERS)
    added: list[str] = []
    for extra in extras:
        name, sep, args = extra.partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise SystemExit(f"--contender {extra!r}: write NAME=ARGS, NAME of letters, digits, '.', '_', '-'")
        base = table.get(name, Contender(name, "cnnsearch"))
        table[name] = Contender(name, base.kind, base.args + tuple(shlex.split(args)))
        if name not in CONTENDERS:
            added.append(name)
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in table]
    if unknown:
        raise SystemExit(f"unknown contender(s) {', '.join(unknown)}; known: {', '.join(table)}")
    return [table[name] for name in chosen + [name for name in added if name not in chosen]]


def val_fraction() -> float:
    from cnnsearch.search.settings import SearchSettings

    return float(SearchSettings.__dataclass_fields__["val_fraction"].default)


def cnnsearch_images(dataset: object, train_images: int | None, seed: int) -> tuple[object, object]:
    """(train, val) indices into the official pool that `cnnsearch search --subset N --seed S` uses.

    cnnsearch's own subsample and make_split are run on a carrier dataset whose pixels hold each
    image's index, so the indices come out of the same code path; checked against the real subset.
    """
    import numpy as np
    import torch

    from cnnsearch.data.dataset import Dataset
    from cnnsearch.data.split import make_split, subsample

    labels = dataset.train_labels  # type: ignore[attr-defined]
    chosen = torch.arange(len(labels))
    if train_images and train_images < len(labels):
        carrier = torch.zeros(len(labels), 1, 1, 3, dtype=torch.uint8)
        for place in range(3):  # base-256 digits: the pool has fewer than 256**3 images
            carrier[:, 0, 0, place] = (chosen // 256**place % 256).to(torch.uint8)
        fake = Dataset(
            name="indices",
            train_images=carrier,
            train_labels=labels,
            test_images=carrier[:1],
            test_labels=labels[:1],
            class_names=dataset.class_names,  # type: ignore[attr-defined]
            test_source="official",
        )
        digits = subsample(fake, train_images, seed=seed).train_images[:, 0, 0].long()
        chosen = digits[:, 0] + 256 * digits[:, 1] + 256**2 * digits[:, 2]
        real = subsample(dataset, train_images, seed=seed)  # type: ignore[arg-type]
        if not torch.equal(real.train_images, dataset.train_images[chosen]):  # type: ignore[attr-defined]
            raise SystemExit("the carrier subset differs from cnnsearch's subsample; versus.py must be updated")
    split = make_split(labels[chosen], val_fraction=val_fraction(), seed=seed)
    return np.asarray(chosen[split.train_indices]), np.asarray(chosen[split.val_indices])


def run_split_matches(work: Path, name: str, train: object, val: object, chosen: object) -> bool | None:
    """Whether the cnnsearch run's saved split (indices into its subset) picks `train` and `val`."""
    import numpy as np

    from cnnsearch.data.split import load_split
    from cnnsearch.run.folder import RunDir

    path = RunDir(work / "runs", name).split_file
    if not path.is_file():
        return None
    split = load_split(path)
    chosen = np.asarray(chosen)
    return bool(np.array_equal(chosen[split.train_indices], train) and np.array_equal(chosen[split.val_indices], val))


def summarise(contenders: list[Contender], results: list[Result], baseline: str | None) -> list[dict]:
    """One row per contender: means over seeds, and the time to the baseline's final best."""
    rows = []
    by_seed = {(r.contender, r.seed): r for r in results}
    for contender in contenders:
        mine = [r for r in results if r.contender == contender.name]
        accs = [r.test_acc for r in mine if not math.isnan(r.test_acc)]
        times, ratios = [], []
        for r in mine:
            base = by_seed.get((baseline, r.seed)) if baseline else None
            if base is None or math.isnan(base.final_best):
                continue
            level = base.final_best
            times.append(r.time_to(level))
            own = base.time_to(level)
            ratios.append(r.time_to(level) / own if own > 0 else math.nan)
        rows.append(
            {
                "contender": contender.name,
                "test_mean": statistics.fmean(accs) if accs else math.nan,
                "test_sd": statistics.stdev(accs) if len(accs) > 1 else math.nan,
                "params": _common.median([float(r.params) for r in mine if r.params is not None]),
                "trials": statistics.fmean(r.finished for r in mine) if mine else math.nan,
                "cut_share": _common.median([r.cut_share for r in mine]),
                "time_to_base_s": _common.median(times) if times else math.nan,
                "ratio": _common.median(ratios) if ratios else math.nan,
                "wall_s": statistics.fmean(r.wall_s for r in mine) if mine else math.nan,
                "over": sum(r.over for r in mine),
                "runs": len(mine),
                "failed": sum(bool(r.error) for r in mine),
            }
        )
    return rows


def summary_table(rows: list[dict], baseline: str | None) -> str:
    header = ["contender", "test acc (mean ± sd)", "params (median)", "trials finished (mean)"]
    header += ["time in pruned/cut trials", f"s to {baseline}'s final best", "ratio", "wall s (mean)", "over budget"]
    lines = []
    for row in rows:
        test = f"{row['test_mean']:.2%}" if not math.isnan(row["test_mean"]) else "–"
        if not math.isnan(row["test_sd"]):
            test += f" ± {row['test_sd'] * 100:.2f}"
        share = f"{row['cut_share']:.0%}" if not math.isnan(row["cut_share"]) else "–"
        over = f"{row['over']}/{row['runs']}" + (f" ({row['failed']} failed)" if row["failed"] else "")
        lines.append(
            [
                row["contender"],
                test,
                row["params"],
                row["trials"],
                share,
                row["time_to_base_s"],
                row["ratio"],
                row["wall_s"],
                over,
            ]
        )
    return _common.markdown_table(header, lines)


def verdicts(rows: list[dict], *, full: bool) -> list[str]:
    """The issue's targets that these contenders can decide."""
    found = {row["contender"]: row for row in rows}
    lines = []
    ours, peer, random = found.get("cnnsearch"), found.get("peer"), found.get("cnnsearch-random")
    if ours and peer and not math.isnan(ours["test_mean"]) and not math.isnan(peer["test_mean"]):
        lead = (ours["test_mean"] - peer["test_mean"]) * 100
        need = LEAD_TARGET[full]
        fewer = ours["params"] < peer["params"]
        lines.append(
            f"cnnsearch {lead:+.2f} points of test accuracy over the peer (target >= {need:g}), with "
            f"{'fewer' if fewer else 'more'} parameters: {_common.verdict(lead >= need and (full or fewer))}"
        )
    if full and ours and not math.isnan(ours["test_mean"]):
        lines.append(
            f"cnnsearch {ours['test_mean']:.2%} test accuracy (target >= {FULL_MIN_ACCURACY:.1%}): "
            f"{_common.verdict(ours['test_mean'] >= FULL_MIN_ACCURACY)}"
        )
    if ours and random and not math.isnan(ours["ratio"]):
        lines.append(
            f"cnnsearch reaches cnnsearch-random's final best validation accuracy in {ours['ratio']:.2f} of "
            f"random's time (median; target <= {TARGET_RATIO:.2f}): {_common.verdict(ours['ratio'] <= TARGET_RATIO)}"
        )
    return lines


def csv_row(r: Result, contender: Contender, args: argparse.Namespace, ratio: float, level: float) -> dict:
    return {
        "contender": r.contender,
        "kind": contender.kind,
        "extra_args": shlex.join(contender.args),
        "seed": r.seed,
        "budget_s": r.budget_s,
        "train_images": args.train_images or "all",
        "end_to_end": args.end_to_end,
        "search_share": args.search_share if args.end_to_end == "two-step" else "",
        "wall_s": r.wall_s,
        "steps_s": json.dumps({k: round(v, 1) for k, v in r.steps_s.items()}),
        "over": r.over,
        "test_acc": r.test_acc,
        "params": r.params if r.params is not None else "",
        "trials_finished": r.finished,
        "outcomes": json.dumps(dict(sorted(r.counts.items()))),
        "cut_share": r.cut_share,
        "final_best_val": r.final_best,
        "baseline_best_val": level,
        "time_to_baseline_best_s": r.time_to(level) if not math.isnan(level) else math.nan,
        "ratio": ratio,
        "same_images": "" if r.same_images is None else r.same_images,
        "error": r.error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, help="Seconds per contender, end to end [600; --full: 3600].")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=10_000, help="Training subset (cnnsearch --subset).")
    parser.add_argument("--full", action="store_true", help="All 60,000 training images (default budget 1 h).")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="Comma-separated, in turn order.")
    parser.add_argument("--contender", action="append", default=[], metavar="NAME=ARGS", help="Extra cnnsearch flags.")
    parser.add_argument("--baseline", default="cnnsearch-random", help="Whose final best the others race to.")
    parser.add_argument(
        "--end-to-end",
        choices=END_TO_END,
        default="export-flag",
        help="cnnsearch: one `search --timeout --export` (default) or search then export.",
    )
    parser.add_argument("--search-share", type=float, default=0.6, help="two-step: search's share of the budget.")
    parser.add_argument("--device", default="auto", help="cnnsearch --device (the peer uses Lightning's auto).")
    parser.add_argument("--work", type=Path, help="Keep runs, models and logs here (default: a temp dir).")
    parser.add_argument("--no-record", action="store_true", help="Print only: no CSV rows, no RESULTS.md section.")
    args = parser.parse_args()
    if args.full:
        args.train_images = None
    budget = args.budget or (3600.0 if args.full else 600.0)
    contenders = parse_contenders(args.contenders, args.contender)
    baseline = args.baseline if args.baseline in {c.name for c in contenders} else None

    import numpy as np

    from cnnsearch.data.load import load_dataset_cached

    dataset = load_dataset_cached("fashion-mnist")
    if dataset.test_source != "official" or len(dataset.test_labels) != TEST_IMAGES:
        raise SystemExit(f"expected Fashion-MNIST's official {TEST_IMAGES} test images, got {dataset.test_source}")
    if args.work and (args.work / "runs").exists():  # cnnsearch would resume the old runs of the same names
        raise SystemExit(f"--work {args.work} already holds runs; choose a new or empty folder")
    work = args.work or Path(tempfile.mkdtemp(prefix="versus-"))
    work.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    interrupted = False
    try:
        for seed in range(args.seeds):
            train, val = cnnsearch_images(dataset, args.train_images, seed)
            indices = work / f"images-s{seed}.npz"
            np.savez(indices, train=train, val=val)
            for contender in contenders:
                _common.echo(f"seed {seed}: {contender.name} ({budget:g} s) ...")
                if contender.kind == "peer":
                    r = run_peer(contender, seed, budget, work, train_images=args.train_images, indices=indices)
                else:
                    r = run_cnnsearch(
                        contender,
                        seed,
                        budget,
                        work,
                        train_images=args.train_images,
                        mode=args.end_to_end,
                        search_share=args.search_share,
                        device=args.device,
                    )
                    pool = np.sort(np.concatenate([train, val]))
                    r.same_images = run_split_matches(work, f"{contender.name}-s{seed}", train, val, pool)
                score(r, dataset.test_images, dataset.test_labels)
                results.append(r)
                _common.echo(
                    f"  test {r.test_acc:.2%}, {r.params} params, {r.finished} trials "
                    f"{dict(sorted(r.counts.items()))}, wall {r.wall_s:.0f} s"
                    + (" OVER BUDGET" if r.over else "")
                    + (f"; {r.error}" if r.error else "")
                )
    except KeyboardInterrupt:  # show what finished; a partial comparison is not recorded
        interrupted, args.no_record = True, True
        _common.echo("interrupted: the contenders that finished follow")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report(args, budget, contenders, results, baseline, interrupted=interrupted)


def report(
    args: argparse.Namespace,
    budget: float,
    contenders: list[Contender],
    results: list[Result],
    baseline: str | None,
    *,
    interrupted: bool = False,
) -> None:
    rows = summarise(contenders, results, baseline)
    images = f"{args.train_images:,}-image subset" if args.train_images else "all 60,000 training images"
    mismatched = [f"{r.contender} seed {r.seed}" for r in results if r.same_images is False]
    notes = [
        f"Fashion-MNIST, {images}, {budget:g} s per contender end to end, {args.seeds} seed(s), "
        f"test accuracy of each final model on the official {TEST_IMAGES:,} test images, scored by this script.",
        "cnnsearch: "
        + (
            f"two-step (`search --timeout {args.search_share:g} x budget`, then `export`; the total is timed)"
            if args.end_to_end == "two-step"
            else "one `search --timeout budget --export DIR`"
        )
        + "; the peer trains and validates on exactly cnnsearch's training and validation images for the seed ("
        + (
            f"NOT the same: the saved split of {', '.join(mismatched)} differs"
            if mismatched
            else "checked against each cnnsearch run's saved split"
        )
        + ").",
        f"Over budget: wall time more than {(1 + OVER_SHARE) * budget:.0f} s (still scored). Time to the baseline's "
        "best: seconds from the contender's start until a finished trial's validation accuracy (cnnsearch: its best "
        f"epoch; the peer: its last) reached the final best of {baseline or 'no baseline'} with the same seed; "
        "ratio over the baseline's own time.",
    ]
    if interrupted:
        notes.insert(0, "INTERRUPTED: only the contenders that finished are shown.")
    extras = [f"{c.name}: `{shlex.join(c.args)}`" for c in contenders if c.args]
    if extras:
        notes.append("Contender flags: " + "; ".join(extras) + ".")
    per_seed = _common.markdown_table(
        ["contender", "seed", "test acc", "params", "trials", "outcomes", "wall s", "of which", "best val acc", "note"],
        [
            [
                r.contender,
                r.seed,
                f"{r.test_acc:.2%}" if not math.isnan(r.test_acc) else "–",
                r.params,
                r.finished,
                json.dumps(dict(sorted(r.counts.items()))),
                r.wall_s,
                ", ".join(f"{step} {seconds:.0f} s" for step, seconds in r.steps_s.items()),
                r.final_best,
                "; ".join(part for part in ("over budget" if r.over else "", r.error) if part),
            ]
            for r in results
        ],
    )
    body = "\n\n".join(
        [summary_table(rows, baseline), *("- " + line for line in verdicts(rows, full=args.full)), per_seed, *notes]
    )
    print(body)
    if args.no_record:
        _common.echo("--no-record: nothing appended to bench/results or bench/RESULTS.md")
        return
    by_seed = {(r.contender, r.seed): r for r in results}
    table = {c.name: c for c in contenders}
    csv_rows = []
    for r in results:
        base = by_seed.get((baseline, r.seed)) if baseline else None
        level = base.final_best if base else math.nan
        own = base.time_to(level) if base and not math.isnan(level) else math.nan
        ratio = r.time_to(level) / own if own and own > 0 and math.isfinite(own) else math.nan
        csv_rows.append(csv_row(r, table[r.contender], args, ratio, level))
    path = _common.append_rows(NAME, csv_rows)
    _common.append_section(f"Head to head: {images}, {budget:g} s end to end", body)
    _common.echo(f"rows appended to {path}; section appended to {_common.RESULTS_MD}")


if __name__ == "__main__":
    main()
