"""Owns counted nouns in messages: `count(1, "epoch")` is "1 epoch", `count(3, "epoch")` "3 epochs"."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and the noun, singular for exactly one (`plural` for irregular nouns, else noun + "s")."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
