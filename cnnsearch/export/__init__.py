"""The end of a search: choosing and confirming the winner (`choose`), the final retrain and
test (`retrain`), the model file formats (`formats`), the model folder and its one reader of
model.json (`model_dir`), fine-tuning (`finetune`) and re-running a trial (`rerun`).

The test split takes no part in any choice. Never prints: progress goes through `on_message`.

Public names are re-exported here and imported on first use (PEP 562), so importing the
package costs nothing until a name is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfirmationRow": "choose",
    "finetune_model": "finetune",
    "SavedModel": "formats",
    "net_from_payload": "formats",
    "ExportFormat": "formats",
    "read_model_meta": "model_dir",
    "ExportedModel": "model_files",
    "load_exported": "model_files",
    "RerunResult": "rerun",
    "rerun_trial": "rerun",
    "ExportResult": "retrain",
    "export_run": "retrain",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
