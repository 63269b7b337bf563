"""Training one candidate: the result and control types (`result`), batches and the
LightningModule (`module`), evaluation and latency (`evaluate`), resume checkpoints
(`checkpoint`), `train_candidate` with its OOM retry (`loop`), the device's choices
(channels-last, bf16 autocast, first micro-batch: `plan`), and the one module that touches
private Lightning names (`lightning_private`).

Knows model, data and spec. Must not know Optuna: pruning reaches it as a callback.

Public names are re-exported here and imported on first use (PEP 562), so importing the
package costs nothing until a name is needed.
"""

from __future__ import annotations

from cnnsearch._lazy import lazy_exports

_EXPORTS = {
    "checkpoint_state": "checkpoint",
    "write_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "eval_batch_size": "evaluate",
    "evaluate": "evaluate",
    "autocast_for": "evaluate",
    "measure_latency": "evaluate",
    "resolve_device": "loop",
    "check_candidate": "loop",
    "train_candidate": "loop",
    "is_out_of_memory": "loop",
    "ResidentBatches": "module",
    "lr_factor": "module",
    "candidate_module_class": "module",
    "DevicePlan": "plan",
    "FLOAT32": "plan",
    "plan_for": "plan",
    "TrialResult": "result",
    "StopTrial": "result",
    "TrialControl": "result",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
