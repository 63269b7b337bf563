"""Owns the statistics of a validation accuracy measured on n images: its standard error, its 95%
interval, and when two accuracies on the same validation images are tied.

An accuracy p on n images is a binomial proportion: its standard error is sqrt(p(1-p)/n) and
its 95% interval p ± 1.96 standard errors (the normal approximation). Two candidates scored on
the same n images are *tied* when their difference is within 1.96 standard errors of it.

Both were scored on the same images, so the difference is judged paired where the trials
recorded their per-image outcomes (`val_correct`): with b images only the first gets right and c
only the second, p1 - p2 = (b - c)/n and its standard error is sqrt(b + c - (b - c)^2/n)/n
(McNemar's comparison, in its normal form). Two networks that err on mostly the same images
differ by less noise than their intervals say, so the paired band is narrower. Trials without
per-image outcomes (runs made before they were recorded) are judged unpaired, as independent
proportions: sqrt(p1(1-p1)/n + p2(1-p2)/n). The leaderboard and export's choice use these rules.

Pure Python: imported by the leaderboard, which never imports torch, numpy or pandas.
"""

from __future__ import annotations

import math

Z95 = 1.96  # standard normal quantile of a two-sided 95% interval

TIE_RULE = "a difference within 1.96 standard errors, sqrt(p1(1-p1)/n + p2(1-p2)/n)"
PAIRED_TIE_RULE = (
    "a difference within 1.96 standard errors, paired on the same images: sqrt(b + c - (b - c)^2/n)/n, "
    "b and c the images only one of the two gets right"
)


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


def unpack_outcomes(packed: str, n: int) -> int | None:
    """A trial's per-image outcomes (`TrialRecord.val_correct`) as one integer of n bits (bit
    n-1-i: image i right); None when missing or not of n images."""
    import base64
    import binascii

    if not packed:
        return None
    try:
        raw = base64.b64decode(packed, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != (n + 7) // 8:
        return None
    return int.from_bytes(raw, "big") >> (8 * len(raw) - n)


def paired_tied(best: int, other: int, n: int, *, z: float = Z95) -> bool:
    """True when two candidates' per-image outcomes (`unpack_outcomes` of the same n images)
    differ by at most z paired standard errors: |b - c| <= z sqrt(b + c - (b - c)^2/n)."""
    if n < 1:
        raise ValueError(f"a validation set must hold at least 1 image, but got n={n}")
    only_best = (best & ~other).bit_count()
    only_other = (other & ~best).bit_count()
    gap = only_best - only_other
    return abs(gap) <= z * math.sqrt(max(0.0, only_best + only_other - gap * gap / n)) + 1e-9


def tied_outcomes(best: tuple[float, str], other: tuple[float, str], n: int) -> tuple[bool, bool]:
    """(tied, judged paired) for two (accuracy, packed outcomes) on the same n images: paired where
    both recorded their outcomes, else as independent proportions (`tied`)."""
    first, second = unpack_outcomes(best[1], n), unpack_outcomes(other[1], n)
    if first is not None and second is not None:
        return paired_tied(first, second, n), True
    return tied(best[0], other[0], n), False


def interval_text(p: float, n: int | None) -> str:
    """'91.30% ±1.31' (the half-width in points), or '91.30%' when n is unknown."""
    if n is None or n < 1:
        return f"{p:.2%}"
    return f"{p:.2%} ±{100 * half_width(p, n):.2f}"
