"""Lazy re-exports for the sub-packages' `__init__.py` (PEP 562): a public name is imported
from its module on first use, so importing a package costs nothing until a name is needed."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """`(__getattr__, __all__)` for `package`, whose public names live in the modules `exports` maps them to."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__, sorted(exports)
