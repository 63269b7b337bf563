"""Networks: string -> layer tables (`layers`) and building an `nn.Module` from an `Architecture`
(`build`).

Knows `spec`. Must not know Optuna, Lightning, search spaces or datasets.

Public names are re-exported here and imported on first use (PEP 562), so importing the
package costs nothing until a name is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CandidateNet": "build",
    "build_model": "build",
    "count_flops": "build",
    "activation_layer": "layers",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
