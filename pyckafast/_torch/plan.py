"""Which layers stream into one CKAMapState and which go through the activation cache.

A streamed layer of width p costs the state float64 moments of p^2 (its own) plus p q for each
pair with a layer of width q, independent of the number of samples. Layers are moved to the
cache, widest first, until the state fits ``max_state_bytes``; every pair involving a cached
("large") layer is then computed by the tiled sample-space pass over the cache, which needs the
partner's rows too, so a small layer that pairs with a large one is cached as well (and streams
for its pairs with layers that are not cached).
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

    def bytes(self, widths: dict[Key, int]) -> int:
        """Float64 bytes of the streamed state."""
        if not (self.stream_a and self.stream_b):
            return 0
        pa = [widths[self.keys_a[i]] for i in self.stream_a]
        return state_bytes(pa, None if self.symmetric else
                           [widths[self.keys_b[j]] for j in self.stream_b])

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
    plan = _routes(keys_a, keys_b, symmetric, large)
    while candidates and plan.bytes(widths) > budget:
        large.add(candidates.pop(0))
        plan = _routes(keys_a, keys_b, symmetric, large)
    return plan


def _routes(keys_a: list[Key], keys_b: list[Key], symmetric: bool, large: set[Key]) -> Plan:
    """The routes when ``large`` are the layers too wide to stream.

    Every pair with a large layer goes through the tiled pass, so both its layers are cached.
    A pair of two cached layers goes there too (their Gram tiles are computed anyway: the pair
    costs only the reduction of two tiles), the other pairs stream. The streamed entries form a
    rectangle: with large layers on model_a's side only, model_a's other layers against all of
    model_b's (the reverse likewise); with large layers on both sides (or a map of one model
    against itself) everything is cached.
    """
    plan = Plan(keys_a, keys_b, symmetric, set(large))
    entries = [(i, j) for i in range(len(keys_a)) for j in range(len(keys_b))
               if not symmetric or i < j]
    wide = [(i, j) for i, j in entries if keys_a[i] in large or keys_b[j] in large]
    cached = {keys_a[i] for i, _ in wide} | {keys_b[j] for _, j in wide}
    if symmetric and large:  # the diagonal of a large layer (1, or nan without variance)
        cached |= set(keys_a)
    plan.cache_pairs = [(i, j) for i, j in entries if keys_a[i] in cached and keys_b[j] in cached]
    streamed = [(i, j) for i, j in entries if (i, j) not in set(plan.cache_pairs)]
    if symmetric:  # no large layer: all stream (a lone layer too: its diagonal is the state's)
        plan.stream_a = plan.stream_b = [] if large else list(range(len(keys_a)))
    else:
        plan.stream_a = sorted({i for i, _ in streamed})
        plan.stream_b = sorted({j for _, j in streamed})
    plan.cached = [k for k in dict.fromkeys([*keys_a, *keys_b]) if k in cached]
    return plan
