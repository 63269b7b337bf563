"""Pins every private Lightning name cnnsearch uses (all of them live in train/lightning_private.py)."""

from __future__ import annotations

import ast
from pathlib import Path

from cnnsearch.train import lightning_private


def test_trainers_skip_the_plugin_callback_scan_when_no_package_registers_one() -> None:
    from pytorch_lightning.trainer.connectors import callback_connector

    from cnnsearch.train.lightning_private import _no_external_callbacks, import_lightning

    pl = import_lightning()
    # Pins Lightning's private name: if it moves, this fails instead of the saving going silently.
    assert callback_connector._load_external_callbacks is _no_external_callbacks
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    assert not [
        c for c in trainer.callbacks if type(c).__module__.split(".")[0] not in ("pytorch_lightning", "lightning")
    ]


def test_only_lightning_private_touches_private_lightning_names() -> None:
    root = Path(lightning_private.__file__).resolve().parents[1]
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "lightning_private.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            private = module and (any(part.startswith("_") for part in module.split(".")) or "connectors" in module)
            if module and "lightning" in module and private:
                offenders.append(f"{path.name}: from {module}")
    assert not offenders
