"""Collective certificates: how many predictions one poisoned training set can change at once.

Chen, Li, Li, Wu & Yan, *On Collective Robustness of Bagging Against Data Poisoning* (ICML 2022),
Section 4 (a binary integer programme per attack budget), and FA's Theorem 4 / App. D (papers/001),
its attack-size-1 special case. A sample-wise certificate assumes a separate poisoned training set per
test sample; here one attack of ``r`` poisons is shared by the whole test set.

**Threat model.** The ensemble's voters (base models, or DPA*'s per-partition averages) vote on each
test sample; one poison reaches a fixed set of voters, given by ``reach`` (a row of voter indices per
*unit*: one partition for DPA, the d models spread from one split bucket for FA). An attack of budget r
picks at most r units; every voter they reach may then output anything on every test sample.

**Formulation** (per block of candidate samples, maximise the number of flipped predictions). Votes
``v_li``, counts ``N_ic``, prediction ``p_i`` (ties to the smaller class). For a class ``c != p_i`` let
``g_ic = N_ip - N_ic - [c < p_i]``; a controlled voter l helps c by ``w_lic = 2[v_li = p_i] +
[v_li not in {p_i, c}]``. Sample i changes its prediction under a controlled set exactly when, for some
c, all controlled voters voting c make c beat p_i, i.e. ``sum_l w_lic x_l >= g_ic + 1``. Binaries: u_b
(unit b poisoned), z_ic (i flipped to c); x_l in [0, 1] (voter l controlled), x_l <= sum of the u_b
that reach l (x_l = u_l when each unit is one voter). ``sum_b u_b <= r``, ``sum_c z_ic <= 1``,
``sum_l min(w_lic, g_ic + 1) x_l >= (g_ic + 1) z_ic`` (coefficients clipped: the same integer points,
a tighter relaxation), and z_ic is dropped where even the r most helpful units cannot reach g_ic + 1.

**Soundness rules.** Samples whose sample-wise radius is >= r cannot change (pruned); the candidates
are split into blocks solved separately (the global attack restricted to a block is feasible there,
so the blocks' bounds add up to a bound on the whole); each block contributes
``min(block size, floor(dual bound + 1e-6))`` flips (its *proven* bound, never the incumbent), the
whole block when HiGHS ends without a bound; the count is never below the sample-wise one and is
made non-increasing in r. The best attack found (a real set of at most r units) is evaluated on
every sample with the controlled voters voting adversarially, so it is an upper bound on the truth.

>>> v = np.array([[0, 0, 0, 1], [0, 0, 1, 1]]); reach = np.arange(4)[:, None]
>>> res = collective(v, 2, reach, [1], samplewise_radius=np.array([1, 0]))
>>> res[0].certified, res[0].attack_bound, res[0].samplewise
(1, 1, 1)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from ..errors import PoisonCertError
from ._common import plurality, vote_counts

__all__ = ["MODES", "CollectiveBlock", "CollectiveResult", "collective", "attack_flips", "exact_collective"]

#: unchanged: predictions that stay the same; accuracy: predictions that stay correct.
MODES = ("unchanged", "accuracy")

#: Tolerance on HiGHS's dual bound before flooring (a bound of 2.9999999 is 3, not 2).
DUAL_TOL = 1e-6


@dataclass(frozen=True)
class CollectiveBlock:
    """One block of candidates at one budget: size, proven flips bound, incumbent, status."""

    size: int
    bound: int
    incumbent: int
    proven: bool
    status: str
    seconds: float


@dataclass(frozen=True)
class CollectiveResult:
    """Collective certificate at one budget r (counts over the ``n_samples`` samples of the mode).

    ``certified``: proven lower bound on the predictions that stay unchanged (correct) under every
    attack of at most r poisons. ``attack_bound``: what stays under ``attack_units`` (the best attack
    found, at most r units), an upper bound on the truth. ``samplewise``: the count from the
    sample-wise radii (radius >= r). ``proven``: every block was solved to proven optimality.
    """

    budget: int
    certified: int
    n_samples: int
    attack_bound: int
    attack_units: tuple[int, ...]
    samplewise: int
    n_candidates: int
    proven: bool
    seconds: float
    blocks: tuple[CollectiveBlock, ...] = field(default=())
    n_test: int = 0

    def fraction(self, count: int) -> float:
        """``count`` over the whole test set (certified accuracy in mode accuracy)."""
        total = self.n_test or self.n_samples
        return count / total if total else 1.0

    @property
    def certified_fraction(self) -> float:
        return self.fraction(self.certified)

    @property
    def attack_fraction(self) -> float:
        return self.fraction(self.attack_bound)


def _check_inputs(votes, n_classes, reach, budgets, samplewise_radius, labels, mode, block_size, time_limit):
    v = np.asarray(votes)
    if v.ndim != 2 or min(v.shape) < 1 or not np.issubdtype(v.dtype, np.integer):
        raise PoisonCertError(f"votes must be an (n_test, n_voters) integer array of class indices, got shape {v.shape}")
    n_classes = int(n_classes)
    if v.min() < 0 or v.max() >= n_classes:
        raise PoisonCertError(f"votes must be class indices in [0, {n_classes})")
    reach = np.asarray(reach)
    if reach.ndim != 2 or reach.shape[0] < 1 or not np.issubdtype(reach.dtype, np.integer):
        raise PoisonCertError(f"reach must be an (n_units, width) integer array of voter indices, got shape {reach.shape}")
    if reach.min() < 0 or reach.max() >= v.shape[1]:
        raise PoisonCertError(f"reach must index the {v.shape[1]} voters")
    if any(len(set(row.tolist())) != len(row) for row in reach):
        raise PoisonCertError("each unit of reach must list distinct voters")
    if mode not in MODES:
        raise PoisonCertError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    bs = sorted({int(b) for b in budgets})
    if not bs or bs[0] < 0:
        raise PoisonCertError(f"budgets must be a non-empty list of non-negative integers, got {list(budgets)}")
    rad = np.asarray(samplewise_radius)
    if rad.shape != (v.shape[0],):
        raise PoisonCertError(f"samplewise_radius must have shape ({v.shape[0]},), got {rad.shape}")
    if labels is None:
        if mode == "accuracy":
            raise PoisonCertError("mode 'accuracy' needs the labels")
    else:
        labels = np.asarray(labels)
        if labels.shape != (v.shape[0],):
            raise PoisonCertError(f"labels must have shape ({v.shape[0]},), got {labels.shape}")
    if int(block_size) < 1:
        raise PoisonCertError(f"block_size must be >= 1, got {block_size}")
    if not float(time_limit) > 0:
        raise PoisonCertError(f"time_limit must be > 0 seconds, got {time_limit}")
    return v.astype(np.int64), n_classes, reach.astype(np.int64), bs, rad.astype(np.int64), labels


def attack_flips(votes: np.ndarray, counts: np.ndarray, pred: np.ndarray, reach: np.ndarray, units: Sequence[int]) -> np.ndarray:
    """Which predictions change when the voters reached by ``units`` vote adversarially (per sample).

    Exact for a fixed controlled set: sample i changes iff some c != p_i beats p_i (ties to the smaller
    class) when every controlled voter votes c; recomputed from the votes, not from the programme.

    >>> v = np.array([[0, 0, 1]]); c = vote_counts(v, 2)
    >>> attack_flips(v, c, plurality(c), np.arange(3)[:, None], [0]).tolist()
    [True]
    """
    n, n_classes = counts.shape
    units = [int(u) for u in units]
    if not units:
        return np.zeros(n, dtype=bool)
    ctrl = np.unique(reach[units].ravel())
    m = ctrl.size
    cc = vote_counts(votes[:, ctrl], n_classes)  # controlled voters' current votes per class
    rows = np.arange(n)
    n_p = counts[rows, pred] - cc[rows, pred]  # p_i keeps only its uncontrolled votes
    new_c = counts - cc + m  # class c with every controlled voter on it
    classes = np.arange(n_classes)[None, :]
    beats = (new_c > n_p[:, None]) | ((new_c == n_p[:, None]) & (classes < pred[:, None]))
    beats[rows, pred] = False
    return beats.any(axis=1)


def _solve_block(
    votes: np.ndarray, counts: np.ndarray, pred: np.ndarray, idx: np.ndarray, reach: np.ndarray,
    voter_units: list[np.ndarray], identity: bool, r: int, time_limit: float,
) -> tuple[CollectiveBlock, tuple[int, ...]]:
    """Maximise the flips among samples ``idx`` with at most r units; return the proven bound and incumbent."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    t0 = time.perf_counter()
    n_classes = counts.shape[1]
    n_units, n_voters = reach.shape[0], votes.shape[1]
    # pairs (i, c) that r units could flip at all (clipped weights, r largest unit powers)
    pairs: list[tuple[int, int, np.ndarray, int]] = []  # (block row, class, clipped weights per voter, g + 1)
    for row, i in enumerate(idx):
        p = pred[i]
        vi = votes[i]
        for c in range(n_classes):
            if c == p:
                continue
            need = int(counts[i, p] - counts[i, c] - (c < p)) + 1
            if need <= 0:  # already flipped: cannot happen for the plurality, kept for safety
                need = 0
            w = np.where(vi == p, 2, np.where(vi == c, 0, 1))
            w = np.minimum(w, max(need, 1))
            power = w[reach].sum(axis=1)
            if np.sort(power)[::-1][:r].sum() < need:
                continue
            pairs.append((row, c, w, need))
    if not pairs:
        return CollectiveBlock(len(idx), 0, 0, True, "no flippable pair", time.perf_counter() - t0), ()
    if identity:
        # voters with the same votes on every sample of the block are interchangeable: one integer
        # y_g in [0, |g|] per group (how many of them to poison) removes the symmetry from the search
        _, group = np.unique(votes[idx], axis=1, return_inverse=True)
        group = np.asarray(group).ravel()
        n_groups = int(group.max()) + 1
        size_g = np.bincount(group, minlength=n_groups)
        rep = np.zeros(n_groups, dtype=np.int64)
        rep[group[::-1]] = np.arange(n_voters)[::-1]  # first voter of each group
        n_u, n_x = n_groups, 0
        ub_u = size_g.astype(float)
    else:
        n_u, n_x = n_units, n_voters
        ub_u = np.ones(n_units)
    n_z = len(pairs)
    n_var = n_u + n_x + n_z
    ri: list[int] = []
    ci: list[int] = []
    vals: list[float] = []
    lo: list[float] = []
    hi: list[float] = []
    row_no = 0
    # budget: sum u <= r
    ri += [row_no] * n_u
    ci += list(range(n_u))
    vals += [1.0] * n_u
    lo.append(-np.inf)
    hi.append(float(r))
    row_no += 1
    # x_l - sum_{b reaches l} u_b <= 0
    if not identity:
        for l in range(n_voters):
            us = voter_units[l]
            ri += [row_no] * (1 + us.size)
            ci += [n_u + l] + us.tolist()
            vals += [1.0] + [-1.0] * us.size
            lo.append(-np.inf)
            hi.append(0.0)
            row_no += 1
    # one class per sample: sum_c z_ic <= 1
    by_row: dict[int, list[int]] = {}
    for j, (row, _, _, _) in enumerate(pairs):
        by_row.setdefault(row, []).append(j)
    for js in by_row.values():
        if len(js) > 1:
            ri += [row_no] * len(js)
            ci += [n_u + n_x + j for j in js]
            vals += [1.0] * len(js)
            lo.append(-np.inf)
            hi.append(1.0)
            row_no += 1
    # (g + 1) z - sum w x <= 0 (identity: sum over groups of w_g y_g)
    for j, (_, _, w, need) in enumerate(pairs):
        wv = w[rep] if identity else w
        nz = np.flatnonzero(wv)
        cols = nz if identity else nz + n_u
        ri += [row_no] * (1 + nz.size)
        ci += [n_u + n_x + j] + cols.tolist()
        vals += [float(need)] + (-wv[nz]).astype(float).tolist()
        lo.append(-np.inf)
        hi.append(0.0)
        row_no += 1
    a = coo_matrix((vals, (ri, ci)), shape=(row_no, n_var)).tocsr()
    obj = np.zeros(n_var)
    obj[n_u + n_x:] = -1.0
    integrality = np.ones(n_var)
    integrality[n_u:n_u + n_x] = 0  # x continuous in [0, 1]: exact, see the module docstring
    upper = np.ones(n_var)
    upper[:n_u] = ub_u
    res = milp(
        obj, constraints=LinearConstraint(a, lo, hi), integrality=integrality, bounds=Bounds(0, upper),
        options={"time_limit": float(time_limit), "disp": False},
    )
    size = len(idx)
    dual = getattr(res, "mip_dual_bound", None)
    units: tuple[int, ...] = ()
    incumbent = 0
    if res.x is not None:
        take = np.round(res.x[:n_u]).astype(np.int64)
        if identity:  # the first y_g voters of each group
            units = tuple(int(l) for g in np.flatnonzero(take > 0) for l in np.flatnonzero(group == g)[: take[g]])
        else:
            units = tuple(int(u) for u in np.flatnonzero(take > 0))
        incumbent = int(round(-float(res.fun))) if res.fun is not None else 0
    if res.status in (0, 1) and dual is not None and np.isfinite(dual):
        bound = min(size, max(0, math.floor(-float(dual) + DUAL_TOL)))
        status = "optimal" if res.status == 0 else "time limit"
    else:
        bound = size
        status = f"no bound ({res.message.strip()[:60]})"
    proven = res.status == 0 and bound <= incumbent
    return CollectiveBlock(size, bound, incumbent, proven, status, time.perf_counter() - t0), units


def collective(
    votes: np.ndarray,
    n_classes: int,
    reach: np.ndarray,
    budgets: Sequence[int],
    samplewise_radius: np.ndarray,
    labels: np.ndarray | None = None,
    mode: str = "unchanged",
    block_size: int = 60,
    time_limit: float = 60.0,
    progress: Callable[[int, int, int, CollectiveBlock], None] | None = None,
) -> list[CollectiveResult]:
    """Collective certificate (Chen et al. 2022, Section 4; FA App. D) for each budget, ascending.

    ``votes``: (n_test, n_voters) class indices (the voters of the certificate's view, e.g. DPA*'s
    partition means); ``reach``: (n_units, width) voter indices one poison can reach per unit;
    ``samplewise_radius``: the sound sample-wise certificate under the same reach (DPA Theorem 1, FA
    Theorem 2), used to prune and as the floor of the result. ``mode`` ``"unchanged"`` counts all
    samples, ``"accuracy"`` the correctly predicted ones. ``time_limit``: seconds per block solve.
    ``progress(budget, block, n_blocks, result)`` is called after each block.
    """
    v, n_classes, reach, bs, rad, labels = _check_inputs(
        votes, n_classes, reach, budgets, samplewise_radius, labels, mode, block_size, time_limit)
    n, n_voters = v.shape
    counts = vote_counts(v, n_classes)
    pred = plurality(counts)
    considered = np.ones(n, dtype=bool) if mode == "unchanged" else pred == labels
    n_considered = int(considered.sum())
    identity = reach.shape[1] == 1 and np.unique(reach[:, 0]).size == reach.shape[0] == n_voters
    if identity:
        order = np.argsort(reach[:, 0])
        reach = reach[order]  # unit l reaches voter l; record the original unit ids for the attack
        unit_ids = order
    else:
        unit_ids = np.arange(reach.shape[0])
    voter_units: list[np.ndarray] = [[] for _ in range(n_voters)]  # type: ignore[misc]
    for b, row in enumerate(reach):
        for l in row:
            voter_units[int(l)].append(b)
    voter_units = [np.asarray(u, dtype=np.int64) for u in voter_units]
    results: list[CollectiveResult] = []
    for r in bs:
        t0 = time.perf_counter()
        samplewise = int((considered & (rad >= r)).sum())
        cand = np.flatnonzero(considered & (rad < r))
        if r == 0 or cand.size == 0:
            results.append(CollectiveResult(r, n_considered if r == 0 else samplewise, n_considered,
                                            n_considered if r == 0 else samplewise, (), samplewise,
                                            int(cand.size), True, time.perf_counter() - t0, (), n))
            continue
        # blocks of candidates, most vulnerable first (small radius, then index: deterministic)
        cand = cand[np.lexsort((cand, rad[cand]))]
        blocks = [cand[s:s + int(block_size)] for s in range(0, cand.size, int(block_size))]
        done: list[CollectiveBlock] = []
        attacks: list[tuple[int, ...]] = []
        for bi, idx in enumerate(blocks):
            blk, units = _solve_block(v, counts, pred, idx, reach, voter_units, identity, r, time_limit)
            done.append(blk)
            if units:
                attacks.append(units)
            if progress is not None:
                progress(r, bi, len(blocks), blk)
        flips_bound = sum(b.bound for b in done)
        certified = max(n_considered - flips_bound, samplewise)
        best_units: tuple[int, ...] = ()
        best_flips = 0
        scored = []
        for units in attacks:
            f = int((attack_flips(v, counts, pred, reach, units) & considered).sum())
            scored.append((f, units))
            if f > best_flips:
                best_units, best_flips = units, f
        # spend what the best block attack leaves of the budget on the next blocks' attacks, greedily
        for _, units in sorted(scored, key=lambda t: -t[0])[1:]:
            if len(best_units) >= r:
                break
            merged = tuple(best_units) + tuple(u for u in units if u not in best_units)[: r - len(best_units)]
            f = int((attack_flips(v, counts, pred, reach, merged) & considered).sum())
            if f > best_flips:
                best_units, best_flips = merged, f
        results.append(CollectiveResult(
            r, certified, n_considered, n_considered - best_flips, tuple(sorted(int(unit_ids[u]) for u in best_units)),
            samplewise, int(cand.size), all(b.proven for b in done), time.perf_counter() - t0, tuple(done), n))
    # monotone in r: an attack of budget r' <= r is an attack of budget r
    out: list[CollectiveResult] = []
    for res in results:
        if out:
            prev = out[-1]
            if prev.attack_bound < res.attack_bound:
                res = replace(res, attack_bound=prev.attack_bound, attack_units=prev.attack_units)
            if prev.certified < res.certified:
                res = replace(res, certified=prev.certified)
        if res.certified > res.attack_bound:  # a proven bound above a real attack: a bug, never a result
            raise PoisonCertError(
                f"internal error: collective certificate {res.certified} exceeds the attack bound {res.attack_bound} at budget {res.budget}")
        out.append(res)
    return out


def exact_collective(votes: np.ndarray, n_classes: int, reach: np.ndarray, budget: int,
                     labels: np.ndarray | None = None, mode: str = "unchanged") -> int:
    """The true collective count by enumerating every set of at most ``budget`` units (tiny cases only).

    Uses :func:`attack_flips` per set; the tests check it separately against enumerating every output
    of the controlled voters.
    """
    from itertools import combinations

    v = np.asarray(votes, dtype=np.int64)
    counts = vote_counts(v, n_classes)
    pred = plurality(counts)
    considered = np.ones(len(v), dtype=bool) if mode == "unchanged" else pred == np.asarray(labels)
    best = 0
    n_units = np.asarray(reach).shape[0]
    for s in range(min(budget, n_units) + 1):
        for units in combinations(range(n_units), s):
            best = max(best, int((attack_flips(v, counts, pred, np.asarray(reach), units) & considered).sum()))
    return int(considered.sum()) - best
