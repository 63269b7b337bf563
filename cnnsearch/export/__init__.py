"""The end of a search: choosing and confirming the winner (`choose`), the final retrain and
test (`retrain`), the model file formats (`formats`), the model folder and its one reader of
model.json (`model_dir`), fine-tuning (`finetune`) and re-running a trial (`rerun`).

The test split takes no part in any choice. Never prints: progress goes through `on_message`.

Public names are re-exported here and imported on first use (PEP 562), so importing the
package costs nothing until a name is needed.
"""

from __future__ import annotations

from cnnsearch._lazy import lazy_exports

_EXPORTS = {
    "ConfirmationRow": "choose",
    "finetune_model": "finetune",
    "SavedModel": "formats",
    "check_formats": "formats",
    "net_from_payload": "formats",
    "ExportFormat": "formats",
    "read_model_meta": "model_dir",
    "ExportedModel": "model_files",
    "load_exported": "model_files",
    "RerunResult": "rerun",
    "rerun_trial": "rerun",
    "ignore_message": "retrain",
    "ExportResult": "retrain",
    "export_run": "retrain",
    "measure_test_accuracy": "retrain",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
