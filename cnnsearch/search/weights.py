"""Owns which trained weights a run keeps: those of its best `--keep-weights` trials only, so a
long search fits on disk. Weights are optional, results are not: they are written after the
trial's result is in the study, and a disk too full for them keeps the result.
"""

from __future__ import annotations

from typing import Any

from cnnsearch.outcomes import STOPPED_BY_TIMEOUT, rank_key
from cnnsearch.run.folder import RunDir, write_atomic


def keep_best_weights(run: RunDir, number: int, result: Any, *, keep: int, network: str = "") -> None:
    """Save this trial's weights when it is among the `keep` best (by best validation accuracy),
    and delete those that fall out.

    Called after the trial's result is in the study: weights are optional, results are not."""
    import io

    import torch

    # A timed-out trial's best epoch is real and export may choose it: its weights count too.
    if result.outcome not in ("complete", *STOPPED_BY_TIMEOUT) or result.model is None or keep <= 0:
        return
    mine = _rank(result.outcome, result.best_val_acc, result.params or None, number)
    scores = []
    for path in sorted(run.path.glob("weights/trial_*.pt")):
        kept_number = int(path.stem.split("_")[1])
        record = run.read_trial_record(kept_number) or {}
        scores.append(
            (_rank(record.get("outcome"), record.get("best_val_acc"), record.get("params"), kept_number), path)
        )
    scores.sort(key=lambda item: item[0])
    if len(scores) >= keep and mine >= scores[keep - 1][0]:
        return
    state = result.best_state if result.best_state is not None else result.model.state_dict()
    buffer = io.BytesIO()  # torch.save onto a full disk says nothing of the errno, Python's write does
    # `network` (the canonical hash) says whose they are: a trial number may be given out again.
    torch.save({"state_dict": state, "epoch": result.best_epoch or result.epochs_run, "network": network}, buffer)
    write_atomic(
        run.weights_file(number),
        buffer.getvalue(),
        what=f"the weights of trial {number}",
        fsync=False,  # a power cut may lose them: they are optional
    )
    for _, path in scores[keep - 1 :]:
        path.unlink(missing_ok=True)


def _rank(outcome: Any, accuracy: Any, params: Any, number: int) -> tuple[bool, float, float, int]:
    """As export ranks trials (export.choose): trained to the end before those the trial timeout
    stopped, then outcomes.rank_key (accuracy, fewer params, the earlier trial), lower first; so the
    weights kept are those of the trials export would take (a tie kept the older, heavier one)."""
    params = int(params) if isinstance(params, (int, float)) and params > 0 else None
    return (outcome in STOPPED_BY_TIMEOUT, *rank_key(float(accuracy or 0.0), params, number))
