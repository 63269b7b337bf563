"""Search spaces: reading and validating a space file (`parse`), sampling a candidate from it and
the inverse, the parameters that sample to a given candidate (`sample`), the sequence form's
positions, their sampler and inverse and every parameter they can ask for (`sequence`), every
parameter a space of either form can ask for, drawn in every trial for relative samplers
(`flat`), and looking at a space outside a search (`inspect`).

Knows `spec` and `errors`. Must not import torch, Lightning or Optuna at import time.

Public names are re-exported here and imported on first use (PEP 562), so importing the
package costs nothing until a name is needed.
"""

from __future__ import annotations

from cnnsearch._lazy import lazy_exports

_EXPORTS = {
    "Feasibility": "inspect",
    "generic_reason": "inspect",
    "feasibility": "inspect",
    "describe_causes": "inspect",
    "require_trainable": "inspect",
    "sample_candidates": "inspect",
    "Dimension": "parse",
    "SearchSpace": "parse",
    "shipped_space": "parse",
    "resolve_space_path": "parse",
    "load_space": "parse",
    "parse_space": "parse",
    "space_differences": "parse",
    "KeyRule": "rules",
    "flat_dimensions": "flat",
    "sample_flat": "flat",
    "SuggestingTrial": "sample",
    "sample_architecture": "sample",
    "params_for": "sample",
    "sequence_dimensions": "sequence",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
