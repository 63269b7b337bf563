"""Networks: string -> layer tables (`layers`) and building an `nn.Module` from an `Architecture`
(`build`).

Knows `spec`. Must not know Optuna, Lightning, search spaces or datasets.

Public names are re-exported here and imported on first use (PEP 562), so importing the
package costs nothing until a name is needed.
"""

from __future__ import annotations

from cnnsearch._lazy import lazy_exports

_EXPORTS = {
    "CandidateNet": "build",
    "build_model": "build",
    "count_flops": "build",
    "activation_layer": "layers",
    "conv_block": "layers",
    "separable_block": "layers",
    "ResidualBlock": "layers",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
