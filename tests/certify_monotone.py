"""Monotonicity properties shared by the vote-count certificates (bagging, random selection).

One helper per property, parametrised by the certificate: ``certify(counts (1, C), alpha)`` returns a
Certificate with ``radius`` and ``detail["p_lower"]``/``detail["p_upper"]``. The test files draw the
inputs with hypothesis (``counts_strategy``) and call these.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from hypothesis import strategies as st


def counts_strategy(max_classes: int, max_count: int):
    """Vote counts of 2..max_classes classes, each 0..max_count, not all zero."""
    return st.integers(2, max_classes).flatmap(
        lambda c: st.lists(st.integers(0, max_count), min_size=c, max_size=c).filter(lambda v: sum(v) > 0)
    )


def check_more_votes_never_lower_the_radius(certify: Callable, v, j: int, alpha: float = 0.01) -> None:
    """Moving one vote from class j to the top class never lowers the certified radius."""
    v = np.array(v)
    top = int(np.argmax(v))
    j = j % len(v)
    if j == top or v[j] == 0:
        return
    w = v.copy()
    w[j] -= 1
    w[top] += 1
    r0 = certify(v[None], alpha).radius[0]
    r1 = certify(w[None], alpha).radius[0]
    assert r1 >= r0, (v.tolist(), w.tolist(), r0, r1)


def check_larger_alpha_never_lowers_the_radius(certify: Callable, v, a1: float, a2: float) -> None:
    """A larger alpha never lowers the radius; the certificate abstains (-1) iff the bounds cross."""
    v = np.array(v)[None]
    lo, hi = sorted((a1, a2))
    c_lo = certify(v, lo)
    c_hi = certify(v, hi)
    assert c_hi.radius[0] >= c_lo.radius[0], (v.tolist(), lo, hi)
    for c in (c_lo, c_hi):
        assert (c.radius[0] == -1) == (c.detail["p_lower"][0] <= c.detail["p_upper"][0])
