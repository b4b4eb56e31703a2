"""Zephyr's ``sys_bitarray`` (``lib/utils/bitarray.c``), one bit per page, answered in O(log N).

The kernel's virtual-region allocator (``mmusim.kernel.vmregion``) keeps its bitmap here. Bit
``i`` set means page ``i`` is allocated. ``first_fit(k)`` is ``sys_bitarray_alloc``'s answer: the
lowest offset that starts ``k`` clear bits -- the bitarray's fast-forward after a mismatched bit
skips only windows that contain a set bit, so its result is exactly that offset.

Data structure: an array-based segment tree over bit offsets, padded to a power of two with set
(allocated) leaves. Each node keeps the length of its longest clear run, of its clear prefix (from
its lowest offset) and of its clear suffix, plus a lazy "assign all clear / all set" tag. First fit
is a single root-to-leaf descent; assigning a range touches O(log N) nodes. ``ops`` counts the
nodes touched (for complexity tests; never reset by the class).
"""

from __future__ import annotations

import functools

__all__ = ["ALLOCATED", "FREE", "BitArray"]

# Lazy tags. A tag on a node means: every page under it is in that state, and the node's own
# (best, pre, suf) already say so; the children have not been told yet.
_NO_TAG = -1
ALLOCATED = 0
FREE = 1


class BitArray:
    """``n`` bits, all clear (free) at first."""

    __slots__ = ("_n", "_cap", "_log", "_best", "_pre", "_suf", "_len", "_tag", "ops", "version")

    def __init__(self, n: int) -> None:
        """Runtime: O(N) the first time a size is seen, then a copy of a cached empty tree."""
        self._n = n
        cap, log, lens, best, pre, suf = _empty_tree(n)
        self._cap = cap
        self._log = log
        # Copies of a cached all-free tree: every kernel boot of a configuration builds the same
        # one, and the explorer boots thousands of kernels.
        self._len = list(lens)
        self._best = list(best)
        self._pre = list(pre)
        self._suf = list(suf)
        self._tag = [_NO_TAG] * (2 * cap)
        self.ops = 0
        self.version = 0  # how many assigns so far: the bits are the same while it is

    @property
    def n(self) -> int:
        """Bits in the array. Runtime: O(1)."""
        return self._n

    def test(self, bit: int) -> bool:
        """Whether ``bit`` is set (allocated) (``sys_bitarray_test_bit``). Runtime: O(log N)."""
        node = 1
        size = self._cap
        tag = self._tag
        half = size >> 1
        lo = 0
        touched = 1
        while node < size:
            t = tag[node]
            if t != _NO_TAG:
                self.ops += touched
                return t == ALLOCATED
            if bit < lo + half:
                node = 2 * node
            else:
                node = 2 * node + 1
                lo += half
            half >>= 1
            touched += 1
        self.ops += touched
        return self._best[node] == 0

    def assign(self, lo: int, hi: int, state: int, *, pushed: bool = False) -> None:
        """Set bits ``[lo, hi)`` to ``state`` (lazy range assignment). Runtime: O(log N).

        ``pushed``: the boundary paths of exactly this range were just pushed (by ``_any_free``).
        """
        if lo >= hi:
            return
        self.version += 1
        cap = self._cap
        log = self._log
        touched = 0 if pushed else self._push_paths(lo, hi)
        best = self._best
        pre = self._pre
        suf = self._suf
        length = self._len
        tag = self._tag
        left = lo + cap
        right = hi + cap
        while left < right:
            if left & 1:
                v = length[left] if state == FREE else 0
                best[left] = pre[left] = suf[left] = v
                if left < cap:
                    tag[left] = state
                left += 1
                touched += 1
            if right & 1:
                right -= 1
                v = length[right] if state == FREE else 0
                best[right] = pre[right] = suf[right] = v
                if right < cap:
                    tag[right] = state
                touched += 1
            left >>= 1
            right >>= 1
        left = lo + cap
        right = hi + cap
        for i in range(1, log + 1):
            for node in (
                left >> i if ((left >> i) << i) != left else 0,
                (right - 1) >> i if ((right >> i) << i) != right else 0,
            ):
                if node == 0:
                    continue
                # Recompute node from its children (it is untagged: it partly overlaps the range).
                a = 2 * node
                b = a + 1
                la = length[a]
                pa = pre[a]
                pre[node] = pa if pa < la else la + pre[b]
                lb = length[b]
                sb = suf[b]
                suf[node] = sb if sb < lb else lb + suf[a]
                m = suf[a] + pre[b]
                ba = best[a]
                bb = best[b]
                if ba < bb:
                    ba = bb
                best[node] = ba if ba > m else m
                touched += 1
        self.ops += touched

    def any_free(self, lo: int, hi: int) -> bool:
        """Whether any bit in ``[lo, hi)`` is clear. Runtime: O(log N)."""
        if lo >= hi:
            return False
        cap = self._cap
        touched = self._push_paths(lo, hi)
        best = self._best
        left = lo + cap
        right = hi + cap
        found = False
        while left < right:
            if left & 1:
                touched += 1
                if best[left]:
                    found = True
                    break
                left += 1
            if right & 1:
                right -= 1
                touched += 1
                if best[right]:
                    found = True
                    break
            left >>= 1
            right >>= 1
        self.ops += touched
        return found

    def first_fit(self, k: int) -> int:
        """Lowest offset starting ``k`` clear bits (``sys_bitarray_alloc``'s answer), or -1.

        One root-to-leaf descent: go left while the left half holds a long enough run, else the
        run straddling the middle if long enough, else go right. Runtime: O(log N).
        """
        best = self._best
        if best[1] < k:
            self.ops += 1
            return -1
        pre = self._pre
        suf = self._suf
        tag = self._tag
        cap = self._cap
        node = 1
        lo = 0
        half = cap >> 1
        touched = 1
        while node < cap:
            # Nodes on this path have no tagged ancestor, so their children's values are
            # current: the descent only reads.
            if tag[node] != _NO_TAG:
                # The whole node is free (it holds a run >= k): its lowest offset is the answer.
                self.ops += touched
                return lo
            a = 2 * node
            touched += 2
            if best[a] >= k:
                node = a
            elif suf[a] + pre[a + 1] >= k:
                self.ops += touched
                return lo + half - suf[a]
            else:
                node = a + 1
                lo += half
            half >>= 1
        # A leaf with best >= k >= 1: k == 1 and this bit is clear.
        self.ops += touched
        return lo

    def free_runs(self) -> list[tuple[int, int]]:
        """Maximal runs ``[lo, hi)`` of clear bits in ascending bit order. O(R log N)."""
        cap = self._cap
        best = self._best
        length = self._len
        tag = self._tag
        runs: list[tuple[int, int]] = []
        # Iterative in-order walk: (node, lo). Right child pushed first so left comes out first.
        stack = [(1, 0)]
        while stack:
            node, lo = stack.pop()
            b = best[node]
            ln = length[node]
            if b == 0:
                continue
            if b == ln:
                hi = lo + ln
                if runs and runs[-1][1] == lo:
                    runs[-1] = (runs[-1][0], hi)
                else:
                    runs.append((lo, hi))
                continue
            # Mixed node: it has no tag (a tagged node is uniform), so its children are current.
            assert tag[node] == _NO_TAG and node < cap
            half = ln >> 1
            stack.append((2 * node + 1, lo + half))
            stack.append((2 * node, lo))
        return runs

    def materialise(self) -> list[bool]:
        """The bitmap (True = set/allocated) over all ``cap`` leaves, respecting tags. O(N)."""
        cap = self._cap
        bits = [True] * cap
        stack = [(1, 0, cap)]
        while stack:
            node, lo, ln = stack.pop()
            t = self._tag[node] if node < cap else _NO_TAG
            if t != _NO_TAG:
                if t == FREE:
                    bits[lo : lo + ln] = [False] * ln
                continue
            if node >= cap:
                bits[lo] = self._best[node] == 0
                continue
            half = ln >> 1
            stack.append((2 * node, lo, half))
            stack.append((2 * node + 1, lo + half, half))
        return bits

    def _check(self) -> list[str]:
        """Structural invariants: the problems found (empty if none). Checks every node not
        covered by an ancestor's tag against values recomputed from the materialised bits, that
        tags sit only on internal nodes and that padding leaves are set. Runtime: O(N)."""
        problems: list[str] = []
        cap = self._cap
        bits = self.materialise()
        if not all(bits[self._n :]):
            problems.append("a padding leaf is free")
        for leaf in range(cap, 2 * cap):
            if self._tag[leaf] != _NO_TAG:
                problems.append(f"leaf {leaf - cap} carries a tag")
        # Recompute (len, best, pre, suf) bottom-up from the materialised bits.
        best = [0] * (2 * cap)
        pre = [0] * (2 * cap)
        suf = [0] * (2 * cap)
        length = [0] * (2 * cap)
        for i in range(cap):
            free = 0 if bits[i] else 1
            best[cap + i] = pre[cap + i] = suf[cap + i] = free
            length[cap + i] = 1
        for node in range(cap - 1, 0, -1):
            a, b = 2 * node, 2 * node + 1
            length[node] = length[a] + length[b]
            pre[node] = pre[a] if pre[a] < length[a] else length[a] + pre[b]
            suf[node] = suf[b] if suf[b] < length[b] else length[b] + suf[a]
            best[node] = max(best[a], best[b], suf[a] + pre[b])
        # Walk the nodes whose stored values must be current: those without a tagged ancestor.
        stack = [1]
        while stack:
            node = stack.pop()
            got = (self._len[node], self._best[node], self._pre[node], self._suf[node])
            want = (length[node], best[node], pre[node], suf[node])
            if got != want:
                problems.append(f"node {node}: (len, best, pre, suf) = {got}, expected {want}")
            if node < cap and self._tag[node] == _NO_TAG:
                stack.append(2 * node)
                stack.append(2 * node + 1)
        return problems

    def _push_paths(self, lo: int, hi: int) -> int:
        """Hand tags down along the root-to-leaf paths of the boundaries of ``[lo, hi)``.

        Afterwards every node that partly overlaps ``[lo, hi)`` is untagged, so the nodes fully
        inside it (the canonical cover) hold current values. Returns the nodes touched.
        """
        cap = self._cap
        left = lo + cap
        right = hi + cap
        path: list[int] = []
        for i in range(self._log, 0, -1):
            if ((left >> i) << i) != left:
                path.append(left >> i)
            if ((right >> i) << i) != right:
                path.append((right - 1) >> i)
        tag = self._tag
        best = self._best
        pre = self._pre
        suf = self._suf
        length = self._len
        touched = len(path)
        for node in path:
            t = tag[node]
            if t == _NO_TAG:
                continue
            tag[node] = _NO_TAG
            a = 2 * node
            b = a + 1
            if t == FREE:
                best[a] = pre[a] = suf[a] = length[a]
                best[b] = pre[b] = suf[b] = length[b]
            else:
                best[a] = pre[a] = suf[a] = 0
                best[b] = pre[b] = suf[b] = 0
            if a < cap:
                tag[a] = tag[b] = t
            touched += 2
        return touched


@functools.lru_cache(maxsize=8)
def _empty_tree(
    n: int,
) -> tuple[int, int, tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The segment tree of ``n`` free pages: (cap, log, len, best, pre, suf). Runtime: O(n), once.

    Leaves [cap, cap + n) are the window's bits, all free; padding leaves are allocated.
    """
    cap, log = 1, 0
    while cap < n:
        cap <<= 1
        log += 1
    lens = [0] * (2 * cap)
    best = [0] * (2 * cap)
    for leaf in range(cap, 2 * cap):
        lens[leaf] = 1
    for leaf in range(cap, cap + n):
        best[leaf] = 1
    pre, suf = list(best), list(best)
    for node in range(cap - 1, 0, -1):
        left, right = 2 * node, 2 * node + 1
        lens[node] = lens[left] + lens[right]
        # The same combination assign() performs (no lazy tags exist yet).
        best[node] = max(best[left], best[right], suf[left] + pre[right])
        pre[node] = pre[left] if pre[left] < lens[left] else lens[left] + pre[right]
        suf[node] = suf[right] if suf[right] < lens[right] else lens[right] + suf[left]
    return cap, log, tuple(lens), tuple(best), tuple(pre), tuple(suf)
