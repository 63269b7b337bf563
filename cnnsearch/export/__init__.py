"""The end of a search: choosing and confirming the winner (`choose`), the final retrain and
test (`retrain`), the search's kept weights (`search_weights`), the model file formats
(`formats`), the model folder and its one reader of model.json (`model_dir`), fine-tuning
(`finetune`) and re-running a trial (`rerun`).

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
    "check_formats": "options",
    "net_from_payload": "formats",
    "ExportFormat": "formats",
    "predict_script_source": "model_dir",
    "read_model_meta": "model_dir",
    "ExportedModel": "model_files",
    "load_exported": "model_files",
    "RerunResult": "rerun",
    "rerun_trial": "rerun",
    "ignore_message": "retrain",
    "ExportResult": "retrain",
    "export_run": "retrain",
    "check_test_share_unseen": "testset",
    "measure_test_accuracy": "testset",
    "BadInput": "standalone_predict",
    "main": "standalone_predict",
    "classify": "standalone_predict",
    "read_meta": "standalone_predict",
    "expand_paths": "standalone_predict",
    "read_image": "standalone_predict",
    "normalise": "standalone_predict",
    "softmax": "standalone_predict",
    "as_csv": "standalone_predict",
    "as_table": "standalone_predict",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
