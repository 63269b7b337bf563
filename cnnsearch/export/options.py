"""Owns the export options' checks that need no run file, so a bad `cnnsearch export` option is
refused before torch is imported: the `--format` names, the `--choose` rules, `--trial`, and
which options contradict each other. export_run calls the same checks (a library caller gets
them too); the CLI calls them first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cnnsearch.errors import UserError

# --format names, in the order they are written (export.formats.FORMAT_TABLE has their files).
FORMATS = ("onnx", "torchscript", "pt")

# --choose: how export picks among the trials when none is named.
CHOICES = {
    "cheapest-tied": "the cheapest (fewer FLOPs, then params) of the trials tied with the best accuracy",
    "best": "the best validation accuracy, however small its lead",
}
# "best" by measurement: the kept trials of eight 10-minute Fashion-MNIST searches, tested with
# their search weights, had the best validation trial best on test in 6 of 8 runs, and the one
# run where cheapest-tied chose another trial exported a network 1.6 points worse. On 1,500
# validation images the unpaired tie band is ~2 points wide: it ties most of the top of a run.
DEFAULT_CHOICE = "best"


def check_choice(rule: str) -> None:
    """--choose must name one of CHOICES."""
    if rule not in CHOICES:
        raise UserError(f"--choose {rule!r} is not valid; use one of: {', '.join(CHOICES)}")


def check_out_folder(out: Path, *, force: bool, option: str = "--out") -> None:
    """`option` (--out, or search's --export, which has no --force) must be a folder that is empty
    or missing, unless --force, and one that can be created and written: refused before any work."""
    from cnnsearch.run.folder import unwritable

    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; choose a folder for {option}")
    if out.is_dir() and any(out.iterdir()) and not force:
        fix = (
            f"pass --force to overwrite it or choose another {option}"
            if option == "--out"
            else f"choose another {option}"
        )
        raise UserError(f"{out} exists and is not empty; {fix}")
    problem = unwritable(out)
    if problem:
        raise UserError(f"{option} {out} {problem}; choose another folder")


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """The --format names asked for, deduplicated in order; UserError for an unknown or unusable one."""
    chosen: list[str] = []
    for name in formats:
        key = str(name).strip().lower()
        if key not in FORMATS:
            raise UserError(f"unknown format {name!r}; valid formats: {', '.join(FORMATS)} (comma-separated)")
        if key not in chosen:
            chosen.append(key)
    if not chosen:
        raise UserError(f"no format to write; pass one or more of {', '.join(FORMATS)}")
    if "onnx" in chosen:
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None:  # verification runs the file with it
            raise UserError(
                "the onnx format needs onnxruntime, which is not installed; pip install onnxruntime, "
                "or leave onnx out of --format"
            )
    return tuple(chosen)


def parse_trial(trial: str | int) -> int | None:
    """None for "best", else the trial number."""
    if isinstance(trial, int) and not isinstance(trial, bool) and trial >= 0:
        return trial
    text = str(trial).strip()
    if text.lower() == "best":
        return None
    if text.isdigit():
        return int(text)
    raise UserError(f"--trial {trial!r} is not valid; use best or a trial number such as 0")


def check_export_options(
    trial: str | int,
    *,
    formats: Sequence[str],
    retrain_epochs: int | None,
    final_budget_s: float | None,
    top: int | None,
    seeds: int,
    no_retrain: bool,
    choose: str,
) -> tuple[int | None, tuple[str, ...]]:
    """Every export option checked against the others: (the trial number or None, the formats)."""
    chosen_formats = check_formats(formats)
    number = parse_trial(trial)
    if retrain_epochs is not None and retrain_epochs < 1:
        raise UserError(f"--final-epochs must be at least 1, but got {retrain_epochs}")
    if top is not None and top < 1:
        raise UserError(f"--top must be at least 1, but got {top}")
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, but got {seeds}")
    if top is not None and number is not None:
        raise UserError(
            f"--top chooses among the best trials, so it cannot be combined with --trial {number}; drop one of them"
        )
    if top is not None and no_retrain:
        raise UserError(
            "--top retrains candidates to choose one and --no-retrain exports saved weights; pass only one of them"
        )
    if no_retrain and retrain_epochs is not None:
        raise UserError("--final-epochs has no effect with --no-retrain; drop one of them")
    if no_retrain and final_budget_s is not None:
        raise UserError("--final-budget has no effect with --no-retrain; drop one of them")
    if retrain_epochs is not None and final_budget_s is not None:
        raise UserError("--final-epochs and --final-budget both set the final schedule; pass only one of them")
    check_choice(choose)
    return number, chosen_formats


def check_finetune_options(model_dir: Path, out: Path, *, epochs: int, lr: float | None, force: bool) -> None:
    """`cnnsearch finetune`'s checks: its numbers, that the model folder exists, and --out."""
    import math

    from cnnsearch.export.model_dir import require_model_folder

    if epochs < 1:
        raise UserError(f"--epochs must be at least 1, but got {epochs}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise UserError(f"--lr must be a positive number, but got {lr}")
    require_model_folder(model_dir)  # what is in it is load_exported's to judge
    if out.resolve() == model_dir.resolve():
        raise UserError(f"--out {out} is the model folder being fine-tuned; choose another --out")
    check_out_folder(out, force=force)
