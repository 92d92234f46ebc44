"""Exhaustive adversaries for the deterministic certificates (test helper, independent of poisoncert).

Threat model: a poisoned training set changes the training sets of the models reachable from the
poisoned *units* (DPA: one partition = one model; FA: one split bucket = the d models
{(j + r) mod kd : r in offsets}). A model whose training set changed may output anything.

Reduction of "any logit vector" to a finite set of behaviours. Plurality aggregation (DPA, FA) only
reads each model's vote, so enumerating one vote per class for each affected model enumerates every
possible outcome. Run-off election reads the vote (round 1) and, for the two finalists (a, b) fixed by
round 1, whether the model votes a or b in round 2. We let each affected model pick its vote v and a
bit beta ("vote for the round-1 winner a" if beta == 0, else for b) independently. This *relaxes* the
real adversary (a real logit vector cannot, e.g., vote a in round 1 and b in round 2 unless it ties
them and b > a), so every outcome of a real attack is among the enumerated ones: a certificate that
survives this adversary is sound, and a minimum attack found here is <= the real minimum.

Monotonicity used to keep the search small: an adversary touching a superset of units can reproduce
any outcome of a subset (a touched model may keep its original vote and round-2 choice), so checking
all sets of exactly r units covers every attack of size <= r.
"""

from __future__ import annotations

import itertools

import numpy as np


def ref_votes(logits: np.ndarray) -> np.ndarray:
    """argmax with ties to the smaller class index, written out per model."""
    out = []
    for row in logits:
        best = 0
        for c in range(1, len(row)):
            if row[c] > row[best]:
                best = c
        out.append(best)
    return np.array(out, dtype=np.int64)


def _top(counts: np.ndarray) -> np.ndarray:
    """Row-wise argmax, ties to the smaller index (counts (M, C))."""
    c = counts.shape[1]
    key = counts * (c + 1) + (c - np.arange(c))  # larger count first, then smaller index
    return np.argmax(key, axis=1)


class Ensemble:
    """One test sample's ensemble: logits (K, C); ``units`` = list of model-index lists."""

    def __init__(self, logits: np.ndarray, units: list[list[int]]):
        self.logits = np.asarray(logits, dtype=float)
        self.K, self.C = self.logits.shape
        self.units = [sorted(set(u)) for u in units]
        self.v = ref_votes(self.logits)
        # pref[i, a, b] = model i votes a (the round-1 winner) over b in round 2
        self.pref = self.logits[:, :, None] > self.logits[:, None, :]

    # ---- aggregation (clean) -------------------------------------------------------------
    def plurality(self) -> int:
        counts = np.bincount(self.v, minlength=self.C)[None, :]
        return int(_top(counts)[0])

    def roe(self) -> int:
        return int(self._roe_many(np.zeros((1, 0), dtype=np.int64), [])[0])

    # ---- aggregation over many adversarial behaviours of the models in A ---------------------
    def _plurality_many(self, opts: np.ndarray, A: list[int]) -> np.ndarray:
        keep = np.ones(self.K, dtype=bool)
        keep[A] = False
        base = np.bincount(self.v[keep], minlength=self.C)
        counts = np.tile(base, (opts.shape[0], 1))
        for col in range(opts.shape[1]):
            counts[np.arange(opts.shape[0]), opts[:, col]] += 1
        return _top(counts)

    def _roe_many(self, opts: np.ndarray, A: list[int]) -> np.ndarray:
        keep = np.ones(self.K, dtype=bool)
        keep[A] = False
        m = opts.shape[0]
        vote = opts // 2
        beta = opts % 2
        base = np.bincount(self.v[keep], minlength=self.C)
        counts = np.tile(base, (m, 1))
        for col in range(opts.shape[1]):
            counts[np.arange(m), vote[:, col]] += 1
        a = _top(counts)
        masked = counts.copy()
        masked[np.arange(m), a] = -1
        b = _top(masked)
        pref_keep = self.pref[keep].sum(axis=0)  # (C, C): unaffected models voting a over b
        n_a = pref_keep[a, b] + (beta == 0).sum(axis=1)
        n_b = self.K - n_a
        return np.where(n_a > n_b, a, np.where(n_b > n_a, b, np.minimum(a, b)))

    def can_change(self, r: int, rule: str, max_combos: int = 400_000) -> bool | None:
        """Can some set of r units change the prediction? None if the search exceeds max_combos."""
        agg = self._plurality_many if rule == "plurality" else self._roe_many
        n_opt = self.C if rule == "plurality" else 2 * self.C
        clean = self.plurality() if rule == "plurality" else self.roe()
        if r < 0:
            return False  # a certificate of -1 claims nothing
        r = min(r, len(self.units))
        for sub in itertools.combinations(range(len(self.units)), r):
            A = sorted(set(itertools.chain.from_iterable(self.units[u] for u in sub)))
            if n_opt ** len(A) > max_combos:
                return None
            opts = np.array(list(itertools.product(range(n_opt), repeat=len(A))), dtype=np.int64).reshape(
                n_opt ** len(A), len(A)
            )
            if (agg(opts, A) != clean).any():
                return True
        return False

    def min_attack(self, rule: str, r_max: int, max_combos: int = 400_000):
        """Smallest r <= r_max whose units can change the prediction; r_max + 1 if none; None if too big."""
        for r in range(0, r_max + 1):
            res = self.can_change(r, rule, max_combos)
            if res is None:
                return None
            if res:
                return r
        return r_max + 1


def dpa_units(k: int) -> list[list[int]]:
    return [[i] for i in range(k)]


def fa_units(k: int, d: int, offsets) -> list[list[int]]:
    kd = k * d
    return [[(j + r) % kd for r in offsets] for j in range(kd)]


def check_sound(ens: Ensemble, rule: str, radius: int, prediction: int, *, undecided_ok: bool = False, context=()):
    """Assert a certificate ``radius`` for ``prediction`` survives the exhaustive adversary; tally tightness.

    The clean aggregate must equal ``prediction``; no set of ``radius`` units may change it (a search
    over more than 10**6 behaviours counts as a pass only when ``undecided_ok``); then the smallest
    attack up to ``radius + 1`` is searched (10**5 behaviours). Returns None when that search is too
    big, else whether the certificate is tight (min_attack == radius + 1).
    """
    clean = ens.plurality() if rule == "plurality" else ens.roe()
    assert clean == prediction, (context, clean, prediction)
    res = ens.can_change(radius, rule, max_combos=10**6)
    assert res is not True and (undecided_ok or res is False), (context, radius)
    m = ens.min_attack(rule, radius + 1, max_combos=10**5)
    if m is None:
        return None
    assert m >= radius + 1, (context, radius, m)
    return m == radius + 1
