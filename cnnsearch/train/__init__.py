"""Training one candidate: the result and control types (`result`), batches and the
LightningModule (`module`), evaluation and latency (`evaluate`), resume checkpoints
(`checkpoint`), `train_candidate` with its OOM retry (`loop`), and the one module that touches
private Lightning names (`lightning_private`).

Knows model, data and spec. Must not know Optuna: pruning reaches it as a callback.

Public names are re-exported here and imported on first use (PEP 562), so importing the
package costs nothing until a name is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "checkpoint_state": "checkpoint",
    "write_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "evaluate": "evaluate",
    "measure_latency": "evaluate",
    "resolve_device": "loop",
    "check_candidate": "loop",
    "train_candidate": "loop",
    "ResidentBatches": "module",
    "lr_factor": "module",
    "TrialResult": "result",
    "StopTrial": "result",
    "TrialControl": "result",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
