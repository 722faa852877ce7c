"""The few one-sided tests the loop needs, in plain Python (no SciPy at run time).

* :func:`binom_sf` — P(X ≥ k) for a binomial count (the exact test of a week's count against its
  baseline total, conditional on their sum);
* :func:`fisher_less` — the one-sided Fisher exact test that one proportion is below another
  (a negative share against its baseline; the complaint rate after a fix against before);
* :func:`two_proportion_less` — the matching two-proportion z statistic, stored for readers.
"""

from __future__ import annotations

import math


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p), summed exactly in log space."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    total = 0.0
    for i in range(k, n + 1):
        total += math.exp(base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq)
    return min(1.0, total)


def two_proportion_less(k_before: int, n_before: int, k_after: int, n_after: int) -> tuple[float, float]:
    """One-sided two-proportion z-test of H1: rate_after < rate_before. Returns (z, p_value);
    z < 0 when the rate fell. Needs both samples non-empty."""
    if n_before <= 0 or n_after <= 0:
        raise ValueError("both samples need at least one observation")
    p1, p2 = k_before / n_before, k_after / n_after
    pooled = (k_before + k_after) / (n_before + n_after)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_before + 1 / n_after))
    if se == 0:
        return 0.0, 1.0 if p2 >= p1 else 0.0
    z = (p2 - p1) / se
    return z, 0.5 * math.erfc(-z / math.sqrt(2))


def fisher_less(k_before: int, n_before: int, k_after: int, n_after: int) -> float:
    """One-sided Fisher exact test of H1: rate_after < rate_before (valid for small samples):
    P(X ≤ k_after) for X ~ Hypergeometric(N = n_before + n_after, K = k_before + k_after, draws = n_after)."""
    big_n, big_k = n_before + n_after, k_before + k_after

    def log_comb(n: int, k: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)

    denom = log_comb(big_n, n_after)
    lo = max(0, n_after - (big_n - big_k))
    total = sum(math.exp(log_comb(big_k, x) + log_comb(big_n - big_k, n_after - x) - denom)
                for x in range(lo, k_after + 1))
    return min(1.0, total)
