"""Owns the statistics of a validation accuracy measured on n images: its standard error, its 95%
interval, and when two accuracies on the same validation images are tied.

An accuracy p on n images is a binomial proportion: its standard error is sqrt(p(1-p)/n) and
its 95% interval p ± 1.96 standard errors (the normal approximation). Two candidates scored on
the same n images are *tied* when their difference is within 1.96 standard errors of a
difference, sqrt(p1(1-p1)/n + p2(1-p2)/n). That treats the two scores as independent; scored on
the same images they are positively correlated, so the paired test would be tighter, but the
search does not store per-image predictions. The leaderboard and export's choice use this one
rule.

Pure Python: imported by the leaderboard, which never imports torch, numpy or pandas.
"""

from __future__ import annotations

import math

Z95 = 1.96  # standard normal quantile of a two-sided 95% interval

TIE_RULE = "a difference within 1.96 standard errors, sqrt(p1(1-p1)/n + p2(1-p2)/n)"


def _check(p: float, n: int) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"an accuracy must lie in [0, 1], but got p={p}")
    if n < 1:
        raise ValueError(f"a validation set must hold at least 1 image, but got n={n}")


def standard_error(p: float, n: int) -> float:
    """Standard error of an accuracy `p` (fraction) measured on `n` images: sqrt(p(1-p)/n)."""
    _check(p, n)
    return math.sqrt(p * (1.0 - p) / n)


def half_width(p: float, n: int, *, z: float = Z95) -> float:
    """Half the width of the 95% interval of `p` on `n` images (fraction): z * sqrt(p(1-p)/n)."""
    return z * standard_error(p, n)


def interval(p: float, n: int, *, z: float = Z95) -> tuple[float, float]:
    """The 95% interval of `p` on `n` images, clipped to [0, 1]."""
    width = half_width(p, n, z=z)
    return max(0.0, p - width), min(1.0, p + width)


def difference_error(p1: float, p2: float, n: int) -> float:
    """Standard error of p1 - p2, two accuracies on the same `n` images, taken as independent."""
    _check(p1, n)
    _check(p2, n)
    return math.sqrt(p1 * (1.0 - p1) / n + p2 * (1.0 - p2) / n)


def tied(best: float, other: float, n: int, *, z: float = Z95) -> bool:
    """True when `other` is within z standard errors of the difference from `best` (either side)."""
    # A tiny tolerance: accuracies are k/n fractions read back from JSON, and equal ones must tie.
    return abs(best - other) <= z * difference_error(best, other, n) + 1e-12


def interval_text(p: float, n: int | None) -> str:
    """'91.30% ±1.31' (the half-width in points), or '91.30%' when n is unknown."""
    if n is None or n < 1:
        return f"{p:.2%}"
    return f"{p:.2%} ±{100 * half_width(p, n):.2f}"
