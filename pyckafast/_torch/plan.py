"""Which layers stream into one CKAMapState and which go through the activation cache.

A streamed layer of width p costs the state float64 moments of p^2 (its own) plus p q for each
pair with a layer of width q, independent of the number of samples. Layers are moved to the
cache, widest first, until the state fits ``max_state_bytes``; every pair involving a cached
("large") layer is then computed by the tiled sample-space pass over the cache, which needs the
partner's rows too, so a small layer that pairs with a large one is cached as well (and still
streams for its pairs with small layers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Plan", "plan_map", "state_bytes", "default_budget"]

Key = tuple[str, str]  # (source model, layer name)


def _own(p: int) -> int:
    return 8 * p * (p + 2)  # X'X and O(p) sums, float64


def state_bytes(pa: list[int], pb: list[int] | None) -> int:
    """Float64 bytes of a map state over widths ``pa`` against ``pb`` (None: ``pa`` with itself,
    pairs i < j only)."""
    if pb is None:
        total = sum(pa)
        cross = (total * total - sum(p * p for p in pa)) // 2
        return sum(_own(p) for p in pa) + 8 * cross
    return sum(_own(p) for p in (*pa, *pb)) + 8 * sum(pa) * sum(pb)


def default_budget(available: int) -> int:
    """The state's share of the memory still available: a quarter (the batch's activations,
    the model and the BLAS buffers need the rest), at most 2 GiB: a layer of p features costs
    the state float64 GEMMs of n p^2 flops, the tiled pass float32 GEMMs of n^2 p, so past a
    few thousand features the cache is the faster route as well as the smaller one."""
    return max(min(available // 4, 2 << 30), 1 << 20)


@dataclass
class Plan:
    """Where every layer goes and which map entries each route computes."""

    keys_a: list[Key]
    keys_b: list[Key]
    symmetric: bool
    large: set[Key]
    stream_a: list[int] = field(default_factory=list)  # map rows computed by the state
    stream_b: list[int] = field(default_factory=list)  # map columns (symmetric: = stream_a)
    cached: list[Key] = field(default_factory=list)  # layers written to the cache, in order
    cache_pairs: list[tuple[int, int]] = field(default_factory=list)  # map entries (i, j)

    def state_share(self, key: Key, widths: dict[Key, int]) -> int:
        """Bytes of the state held for one layer: its own moments and half of each cross block
        it takes part in (so the shares add up to the state)."""
        rows = {self.keys_a[i] for i in self.stream_a}
        cols = {self.keys_b[j] for j in self.stream_b}
        if key not in rows | cols:
            return 0
        p = widths[key]
        if self.symmetric:
            partners = sum(widths[k] for k in rows) - p
            return _own(p) + 4 * p * partners
        share = 0
        if key in rows:
            share += _own(p) + 4 * p * sum(widths[k] for k in cols)
        if key in cols:
            share += _own(p) + 4 * p * sum(widths[k] for k in rows)
        return share


def plan_map(keys_a: list[Key], keys_b: list[Key], widths: dict[Key, int], symmetric: bool,
             budget: int) -> Plan:
    """Move the widest layers to the cache until the streamed state fits ``budget`` bytes."""
    large: set[Key] = set()
    candidates = sorted(set(keys_a) | set(keys_b), key=lambda k: -widths[k])

    def streamed_bytes() -> int:
        pa = [widths[k] for k in keys_a if k not in large]
        pb = None if symmetric else [widths[k] for k in keys_b if k not in large]
        return state_bytes(pa, pb)

    while candidates and streamed_bytes() > budget:
        large.add(candidates.pop(0))
    plan = Plan(keys_a, keys_b, symmetric, large)
    plan.stream_a = [i for i, k in enumerate(keys_a) if k not in large]
    plan.stream_b = plan.stream_a if symmetric else [j for j, k in enumerate(keys_b) if k not in large]
    entries = [(i, j) for i in range(len(keys_a)) for j in range(len(keys_b))
               if not symmetric or i < j]
    plan.cache_pairs = [(i, j) for i, j in entries if keys_a[i] in large or keys_b[j] in large]
    needed = {keys_a[i] for i, _ in plan.cache_pairs} | {keys_b[j] for _, j in plan.cache_pairs}
    if symmetric:  # the diagonal of a large layer (1, or nan without variance) needs its rows
        needed |= large
    plan.cached = [k for k in dict.fromkeys([*keys_a, *keys_b]) if k in needed]
    return plan
