"""The only place that touches private Lightning names; tests/train/test_lightning_private.py
pins each, so a Lightning upgrade that moves one fails loudly.

Also sets Lightning up once per process: quiet loggers, a frozen import-time heap, and no
per-Trainer scan for plugin callbacks.
"""

from __future__ import annotations

import gc
import logging
import warnings

_HEAP_FROZEN = False


def import_lightning():
    global _HEAP_FROZEN
    import pytorch_lightning as pl

    if not _HEAP_FROZEN:
        # The import-time heap never dies: freezing it makes each trial's gc.collect() (CUDA
        # memory release) cost ~0 ms instead of ~220 ms (bench/overhead.py).
        gc.freeze()
        _HEAP_FROZEN = True
        # Once: each setLevel clears every logger's cache (~0.2 ms apiece under cProfile).
        for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
            logging.getLogger(name).setLevel(logging.ERROR)
        _skip_callback_plugin_scan()
    # Each call: a caller's `warnings.catch_warnings()` (pytest's, for one) resets the filters.
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    return pl


def _no_external_callbacks(group: str) -> list:
    return []


def _skip_callback_plugin_scan() -> None:
    """Every Trainer() reads the entry points of all installed packages looking for plugin
    callbacks: most of its construction (Trainer() took 3.2-4.4 ms with it, 0.7-0.9 ms without,
    bench/overhead.py). Installed packages don't
    change while a search runs, so when the first look finds none, later Trainers skip it."""
    from pytorch_lightning.trainer.connectors import callback_connector

    lookup = getattr(callback_connector, "_load_external_callbacks", None)
    if lookup is not None and not lookup("pytorch_lightning.callbacks_factory"):
        callback_connector._load_external_callbacks = _no_external_callbacks
