"""Zephyr's kernel virtual-region allocator (``virt_region_alloc`` / ``virt_region_free``).

Zephyr hands out kernel virtual address space -- for ``k_mem_map()``, for the aliases of
memory-mapped thread stacks -- from one bitmap, ``virt_region_bitmap``, with one bit per page of the
window ``[KERNEL_VM_BASE, KERNEL_VM_BASE + KERNEL_VM_SIZE)``. This module gives the same answers as
that code, operation by operation, in O(log N) per operation (N = pages in the window) instead of
the linear bitmap scans of ``sys_bitarray_alloc()``.

What is reproduced, as read in ``zephyrproject-rtos/zephyr`` ``kernel/mmu.c`` (commit 02d6d2020cb5:
``virt_from_bitmap_offset``, ``virt_to_bitmap_offset``, ``virt_region_init``, ``virt_region_free``,
``virt_region_alloc``) and ``lib/utils/bitarray.c`` (commits 6da8d7ac9e2b and 074f1e627492:
``sys_bitarray_alloc``, ``sys_bitarray_free``, ``sys_bitarray_set_region``, ``match_region``);
none of their code is copied here:

* **Bit 0 is the highest page.** The region of ``size`` bytes whose top page is bit ``off`` starts at
  ``VIRT_RAM_END - off * PAGE - size`` (``virt_from_bitmap_offset``), ``VIRT_RAM_END = base + size``.
* **Boot reservation** (``virt_region_init``): ``reserved_top // PAGE`` bits from bit 0
  (``K_MEM_VM_RESERVED``: one page iff ``CONFIG_DEMAND_PAGING``), and ``(free_start - base) // PAGE``
  bits at ``virt_to_bitmap_offset(base, free_start - base)`` -- Zephyr's own integer arithmetic, so
  with a ``free_start`` that is not page-aligned the pages *1 .. floor* above ``base`` are reserved
  and the page at ``base`` itself stays free (``K_MEM_VM_FREE_START`` is page-aligned on real
  builds; only then is the allocator's "below free_start" failure path reachable at all).
* **First fit from the lowest bit** (``sys_bitarray_alloc``): the first run of ``num_bits`` clear
  bits counting from bit 0, i.e. the highest free run (scanning down from the top of the window)
  with at least ``num_bits`` pages; the region takes the top ``num_bits`` pages of that run.
  The bitarray's fast-forward after a mismatched bit skips only windows that contain a set bit, so
  its result is exactly the lowest such offset. Mappings therefore grow downward from the top, and
  a region freed and re-requested at the same size comes back at the same address.
  NOTE: newer ``bitarray.c`` (074f1e627492) has a separate path for bitarrays of at most 32 bits
  that is *best fit* (``bitmask_find_gap(..., first_match=false)``); a kernel VM window of 32
  pages or fewer would take that path there. This module models the general (> 32 bits) path for
  every window size, as the version at 6da8d7ac9e2b does for all sizes (commit dates not checked).
* ``virt_region_alloc(size, align)``: ``num_bits = (size + align - PAGE) // PAGE``; allocate; if that
  over-allocated, round the start up to ``align`` and give back the unused head (always, even when
  empty) and tail (when non-empty) through ``virt_region_free``; if the result is below
  ``free_start`` (``K_MEM_VM_FREE_START``), release it and fail.
* ``virt_region_free(addr, size)``: ``__ASSERT`` that ``[addr, addr + size)`` lies in
  ``[free_start, VIRT_RAM_END - reserved_top)``, then ``sys_bitarray_free``.

Where this module deliberately differs (both documented at the code):

* Zephyr's failure path frees ``size`` *bytes* worth of bits (``sys_bitarray_free(&bitmap, size,
  offset)``), not the ``num_bits`` it took (reference §6.6). Here the failure path releases what the
  allocation still holds, unless ``zephyr_free_bug=True``.
* Freeing pages that are not all allocated (a double free, an overlap with a free page): Zephyr's
  ``sys_bitarray_free`` refuses with ``-EFAULT``, which ``virt_region_free`` ignores -- a silent
  no-op that leaves the caller believing the region is gone (and leaks any allocated pages of a
  partly-free range). Here it is a ``KernelAssert``; so are unaligned frees.

Every assertion is a :class:`~mmusim.kernel.core.KernelAssert` whose message starts with the Zephyr
function that asserts (``virt_region_free: ...``, ``virt_region_alloc: ...``).

Data structure: an array-based segment tree over bit offsets (leaf ``i`` = bit ``i`` = the page
``i + 1`` pages below ``VIRT_RAM_END``), padded to a power of two with allocated leaves. Each node
keeps the length of its longest free run, of its free prefix (from its lowest offset, i.e. the
high-address end) and of its free suffix, plus a lazy "assign all free / all allocated" tag. First
fit from bit 0 is a single root-to-leaf descent; assigning a range touches O(log N) nodes.
"""

from __future__ import annotations

import functools

from mmusim.kernel.core import KernelAssert

__all__ = ["VirtRegionAllocator"]

# Lazy tags. A tag on a node means: every page under it is in that state, and the node's own
# (best, pre, suf) already say so; the children have not been told yet.
_NO_TAG = -1
_ALLOCATED = 0
_FREE = 1


class VirtRegionAllocator:
    """Zephyr's ``virt_region_alloc`` / ``virt_region_free`` over one kernel VM window.

    ``base``/``size`` are ``CONFIG_KERNEL_VM_BASE``/``CONFIG_KERNEL_VM_SIZE``; ``free_start`` is
    ``K_MEM_VM_FREE_START`` (end of the kernel image); ``reserved_top`` is ``K_MEM_VM_RESERVED``
    (one page iff ``CONFIG_DEMAND_PAGING``, else 0). The constructor performs
    ``virt_region_init()``, which Zephyr runs lazily on first use -- the same state either way.

    ``zephyr_free_bug=True`` reproduces Zephyr's failure path in ``virt_region_alloc`` literally:
    ``sys_bitarray_free(&bitmap, size, offset)`` with ``size`` in *bytes*. ``sys_bitarray_free``
    then rejects the range (``-EINVAL``: it runs past the end of the bitmap), or finds a bit in
    it clear (``-EFAULT``), and frees nothing -- or, if every bit happens to be set, frees them
    all, other regions' bits included. In practice only the first happens: the failure path is
    reachable only with a ``free_start`` that is not page-aligned, the only page below it that
    can be free is the one at ``base`` (bit N-1), so the failed region ends at the last bit, and
    ``size`` bits from its offset run past it whenever ``page > 1``. The observable effect is
    that the failed allocation's pages stay allocated (leaked). With the default ``False`` they
    are released.

    ``mutant_double_alloc=True`` is a deliberately broken allocator (the mutant
    ``va-double-alloc``, ``CONFIG_SIM_MUTANT_VA_DOUBLE_ALLOC``): every second successful
    ``alloc`` of a non-empty region returns it without keeping its pages allocated, so a later
    allocation hands out the same pages again; a free of pages not all allocated is then Zephyr's
    silent no-op instead of a ``KernelAssert``. The bitmap stays self-consistent (``_check``
    passes): only its users can tell.

    ``ops`` counts segment-tree nodes touched (for complexity tests; never reset by the class).
    """

    __slots__ = (
        "_base",
        "_end",
        "_page",
        "_n",
        "_cap",
        "_log",
        "_free_start",
        "_reserved_top",
        "_zephyr_free_bug",
        "_mutant_double_alloc",
        "_allocs",
        "_best",
        "_pre",
        "_suf",
        "_len",
        "_tag",
        "_allocated",
        "_boot_bits",
        "ops",
    )

    def __init__(
        self,
        base: int,
        size: int,
        free_start: int,
        *,
        page: int = 4096,
        reserved_top: int = 0,
        zephyr_free_bug: bool = False,
        mutant_double_alloc: bool = False,
    ) -> None:
        """Build the allocator and perform ``virt_region_init()``. Runtime: O(N) (N = pages)."""
        if page <= 0:
            raise ValueError(f"page size must be positive, not {page}")
        if base < 0 or base % page or size <= 0 or size % page:
            raise ValueError(
                f"window base {base:#x} and size {size:#x} must be page-aligned, size > 0"
            )
        end = base + size
        if reserved_top < 0 or reserved_top % page or reserved_top > size:
            raise ValueError(
                f"reserved_top {reserved_top:#x} must be a multiple of the page inside the window"
            )
        if not base <= free_start <= end:
            raise ValueError(f"free_start {free_start:#x} outside the window [{base:#x}, {end:#x}]")
        self._base = base
        self._end = end
        self._page = page
        self._free_start = free_start
        self._reserved_top = reserved_top
        self._zephyr_free_bug = zephyr_free_bug
        self._mutant_double_alloc = mutant_double_alloc
        self._allocs = 0  # successful allocations (for the mutant)
        self.ops = 0

        n = size // page
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
        self._allocated = 0

        # virt_region_init(): the same bit ranges Zephyr's integer arithmetic computes.
        boot: list[tuple[int, int]] = []
        reserved_bits = reserved_top // page
        if reserved_bits > 0:
            boot.append((0, reserved_bits))
        image = free_start - base
        image_bits = image // page
        if image_bits > 0:
            # virt_to_bitmap_offset(VIRT_RAM_START, image) = (END - START - image) // PAGE
            boot.append(((end - base - image) // page, image_bits))
        for off, bits in boot:
            self._assign(off, off + bits, _ALLOCATED)
        self._boot_bits = tuple(boot)
        self._allocated = _union_length([(off, off + bits) for off, bits in boot])

    # ------------------------------------------------------------------ public queries

    @property
    def base(self) -> int:
        """``KERNEL_VM_BASE`` (``K_MEM_VIRT_RAM_START``). Runtime: O(1)."""
        return self._base

    @property
    def end(self) -> int:
        """``K_MEM_VIRT_RAM_END`` = base + size. Runtime: O(1)."""
        return self._end

    @property
    def page(self) -> int:
        """``CONFIG_MMU_PAGE_SIZE``. Runtime: O(1)."""
        return self._page

    @property
    def num_pages(self) -> int:
        """Bits in the bitmap (``KERNEL_VM_SIZE / PAGE``). Runtime: O(1)."""
        return self._n

    @property
    def free_start(self) -> int:
        """``K_MEM_VM_FREE_START``. Runtime: O(1)."""
        return self._free_start

    @property
    def reserved_top(self) -> int:
        """``K_MEM_VM_RESERVED``. Runtime: O(1)."""
        return self._reserved_top

    @property
    def zephyr_free_bug(self) -> bool:
        """Whether the failure path of ``alloc`` reproduces Zephyr's bytes-for-bits free. O(1)."""
        return self._zephyr_free_bug

    @property
    def allocated_pages(self) -> int:
        """Number of set bits (boot reservations included). Runtime: O(1)."""
        return self._allocated

    @property
    def free_pages(self) -> int:
        """Number of clear bits. Runtime: O(1)."""
        return self._n - self._allocated

    def bit_offset(self, addr: int) -> int:
        """Bitmap bit of the page containing ``addr`` (bit 0 = highest page). Runtime: O(1).

        For a region ``[addr, addr + size)`` Zephyr's ``virt_to_bitmap_offset(addr, size)`` is
        ``bit_offset(addr + size - 1)``.
        """
        self._check_in_window(addr)
        return (self._end - 1 - addr) // self._page

    def is_allocated(self, addr: int) -> bool:
        """Whether the page containing ``addr`` is allocated. Runtime: O(log N)."""
        self._check_in_window(addr)
        node = 1
        bit = (self._end - 1 - addr) // self._page
        size = self._cap
        tag = self._tag
        half = size >> 1
        lo = 0
        touched = 1
        while node < size:
            t = tag[node]
            if t != _NO_TAG:
                self.ops += touched
                return t == _ALLOCATED
            if bit < lo + half:
                node = 2 * node
            else:
                node = 2 * node + 1
                lo += half
            half >>= 1
            touched += 1
        self.ops += touched
        return self._best[node] == 0

    def free_runs(self) -> list[tuple[int, int]]:
        """The free runs as ``(addr, size)`` in ascending address order.

        Runtime: O(R log N) for R maximal free/allocated runs (only nodes holding both free and
        allocated pages are opened).
        """
        runs_bits = self._free_bit_runs()
        page = self._page
        end = self._end
        return [(end - hi * page, (hi - lo) * page) for lo, hi in reversed(runs_bits)]

    # ------------------------------------------------------------------ alloc / free

    def alloc(self, size: int, align: int | None = None) -> int | None:
        """``virt_region_alloc(size, align)``: the region's address, or ``None`` (Zephyr's NULL).

        ``align`` defaults to the page size and must be a positive multiple of it; ``size`` must
        be a non-negative multiple of the page size (Zephyr's callers guarantee both).
        Runtime: O(log N).

        ``size == 0`` is Zephyr's corner too: ``None`` for ``align == page`` (0 bits is
        ``-EINVAL``); with a larger ``align`` an aligned address that holds no page.

        Raises ``KernelAssert("virt_region_free: ...")`` where Zephyr's internal
        ``virt_region_free`` of the alignment head would assert: only when the over-allocation
        starts below ``free_start``, which needs ``free_start - base < page``.
        """
        page = self._page
        if align is None:
            align = page
        if align <= 0 or align % page:
            raise KernelAssert(
                f"virt_region_alloc: align {align:#x} is not a positive multiple of the page"
            )
        if size < 0 or size % page:
            raise KernelAssert(
                f"virt_region_alloc: size {size:#x} is not a non-negative multiple of the page"
            )
        num_bits = (size + align - page) // page
        # sys_bitarray_alloc(): -EINVAL for 0 bits or more bits than the array has.
        if num_bits == 0 or num_bits > self._n:
            return None
        offset = self._first_fit(num_bits)
        if offset < 0:
            return None  # -ENOSPC: "insufficient virtual address space"
        self._assign(offset, offset + num_bits, _ALLOCATED)
        self._allocated += num_bits

        alloc_size = num_bits * page
        dest = self._end - offset * page - alloc_size  # virt_from_bitmap_offset()
        if alloc_size > size:
            aligned = -(-dest // align) * align  # ROUND_UP(dest, align)
            # Zephyr frees the head unconditionally (virt_region_free asserts its window even
            # for an empty head), the tail only if it is non-empty.
            self._region_free(dest, aligned - dest)
            tail = dest + alloc_size - (aligned + size)
            if tail > 0:
                self._region_free(aligned + size, tail)
            dest = aligned

        if dest < self._free_start:
            if self._zephyr_free_bug:
                # Literal Zephyr: sys_bitarray_free(&bitmap, size, offset) -- bytes as bits.
                self._bitarray_free(size, offset)
            elif size > 0:
                # What the allocation still holds after the head/tail were given back.
                first = (self._end - dest - size) // page
                self._assign(first, first + size // page, _FREE)
                self._allocated -= size // page
            return None
        if self._mutant_double_alloc and size > 0:
            self._allocs += 1
            if self._allocs % 2 == 0:
                # MUTANT (SIM_MUTANT_VA_DOUBLE_ALLOC): hand the region out, but leave it free.
                first = (self._end - dest - size) // page
                self._assign(first, first + size // page, _FREE)
                self._allocated -= size // page
        return dest

    def free(self, addr: int, size: int) -> None:
        """``virt_region_free(addr, size)``. Runtime: O(log N).

        Raises ``KernelAssert("virt_region_free: ...")`` if the range is not inside
        ``[free_start, end - reserved_top)`` (Zephyr's ``__ASSERT``), is not page-aligned, or
        contains a page that is not allocated (double free; Zephyr silently ignores it, see the
        module docstring). ``size == 0`` inside the window is a no-op, as in Zephyr.
        """
        self._region_free(addr, size)

    # ------------------------------------------------------------------ invariants

    def _check(self) -> None:
        """Structural invariants; on failure print the state, then raise ``AssertionError``.

        Checks every node not covered by an ancestor's tag against values recomputed from the
        materialised bitmap, that tags sit only on internal nodes, that padding leaves are
        allocated, the page counter, and that the boot reservations are still allocated.
        Runtime: O(N).
        """
        problems: list[str] = []
        cap = self._cap
        n = self._n
        bits = self._materialise()
        allocated = sum(bits[:n])
        if allocated != self._allocated:
            problems.append(f"allocated counter {self._allocated} != {allocated} set bits")
        if not all(bits[n:]):
            problems.append("a padding leaf is free")
        for leaf in range(cap, 2 * cap):
            if self._tag[leaf] != _NO_TAG:
                problems.append(f"leaf {leaf - cap} carries a tag")
        for off, count in self._boot_bits:
            if not all(bits[off : off + count]):
                problems.append(f"boot reservation bits [{off}, {off + count}) not all set")
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
        if problems:
            print(self._dump())
            raise AssertionError("VirtRegionAllocator._check: " + "; ".join(problems[:10]))

    # ------------------------------------------------------------------ internals

    def __repr__(self) -> str:
        return (
            f"VirtRegionAllocator(base={self._base:#x}, end={self._end:#x}, page={self._page:#x}, "
            f"free_start={self._free_start:#x}, reserved_top={self._reserved_top:#x}, "
            f"allocated_pages={self._allocated}/{self._n})"
        )

    def _dump(self) -> str:
        lines = [repr(self)]
        runs = self.free_runs()
        lines.append(f"free runs ({len(runs)}):")
        lines.extend(f"  [{a:#x}, {a + s:#x}) {s // self._page} pages" for a, s in runs[:50])
        if len(runs) > 50:
            lines.append(f"  ... {len(runs) - 50} more")
        if self._n <= 1024:
            bits = self._materialise()[: self._n]
            lines.append(
                "bitmap (bit 0 = top page first): " + "".join("1" if b else "." for b in bits)
            )
        return "\n".join(lines)

    def _check_in_window(self, addr: int) -> None:
        if not self._base <= addr < self._end:
            raise ValueError(
                f"address {addr:#x} outside the window [{self._base:#x}, {self._end:#x})"
            )

    def _region_free(self, addr: int, size: int) -> None:
        """``virt_region_free`` with this module's extra assertions. Runtime: O(log N)."""
        page = self._page
        if size < 0:
            raise KernelAssert(f"virt_region_free: negative size {size} at {addr:#x}")
        # Zephyr's __ASSERT (KERNEL_DIRECT_MAP=n): addr >= Z_VIRT_REGION_START_ADDR and
        # addr + size - 1 < Z_VIRT_REGION_END_ADDR.
        if not (addr >= self._free_start and addr + size - 1 < self._end - self._reserved_top):
            raise KernelAssert(
                f"virt_region_free: invalid virtual address region {addr:#x} ({size:#x}): "
                f"outside [{self._free_start:#x}, {self._end - self._reserved_top:#x})"
            )
        if size == 0:
            return  # sys_bitarray_free(0 bits) is -EINVAL, ignored: nothing happens.
        if addr % page or size % page:
            raise KernelAssert(
                f"virt_region_free: unaligned region {addr:#x} ({size:#x}), page {page:#x}"
            )
        first = (self._end - addr - size) // page  # virt_to_bitmap_offset()
        num_bits = size // page
        # Zephyr: sys_bitarray_free() returns -EFAULT unless every bit is set and
        # virt_region_free() drops that return value -- a silent no-op. We assert instead.
        if self._any_free(first, first + num_bits):
            if self._mutant_double_alloc:
                return  # MUTANT (SIM_MUTANT_VA_DOUBLE_ALLOC): Zephyr's silent no-op
            raise KernelAssert(
                f"virt_region_free: region {addr:#x} ({size:#x}) is not wholly allocated "
                f"(double free?)"
            )
        self._assign(first, first + num_bits, _FREE, pushed=True)
        self._allocated -= num_bits

    def _bitarray_free(self, num_bits: int, offset: int) -> None:
        """``sys_bitarray_free(&bitmap, num_bits, offset)`` with its error returns. O(log N)."""
        n = self._n
        if num_bits == 0 or num_bits > n or offset >= n or offset + num_bits - 1 >= n:
            return  # -EINVAL
        if self._any_free(offset, offset + num_bits):
            return  # -EFAULT
        self._assign(offset, offset + num_bits, _FREE, pushed=True)
        self._allocated -= num_bits

    def _pull(self, node: int) -> None:
        """Recompute ``node`` from its children (no tag handling)."""
        a = 2 * node
        b = a + 1
        pre = self._pre
        suf = self._suf
        length = self._len
        best = self._best
        pa = pre[a]
        la = length[a]
        pre[node] = pa if pa < la else la + pre[b]
        sb = suf[b]
        lb = length[b]
        suf[node] = sb if sb < lb else lb + suf[a]
        m = suf[a] + pre[b]
        ba = best[a]
        bb = best[b]
        if ba < bb:
            ba = bb
        best[node] = ba if ba > m else m

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
            if t == _FREE:
                best[a] = pre[a] = suf[a] = length[a]
                best[b] = pre[b] = suf[b] = length[b]
            else:
                best[a] = pre[a] = suf[a] = 0
                best[b] = pre[b] = suf[b] = 0
            if a < cap:
                tag[a] = tag[b] = t
            touched += 2
        return touched

    def _assign(self, lo: int, hi: int, state: int, *, pushed: bool = False) -> None:
        """Set bits ``[lo, hi)`` to ``state`` (lazy range assignment). Runtime: O(log N).

        ``pushed``: the boundary paths of exactly this range were just pushed (by ``_any_free``).
        """
        if lo >= hi:
            return
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
                v = length[left] if state == _FREE else 0
                best[left] = pre[left] = suf[left] = v
                if left < cap:
                    tag[left] = state
                left += 1
                touched += 1
            if right & 1:
                right -= 1
                v = length[right] if state == _FREE else 0
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

    def _any_free(self, lo: int, hi: int) -> bool:
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

    def _first_fit(self, k: int) -> int:
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

    def _free_bit_runs(self) -> list[tuple[int, int]]:
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

    def _materialise(self) -> list[bool]:
        """The bitmap (True = set/allocated) over all ``cap`` leaves, respecting tags. O(N)."""
        cap = self._cap
        bits = [True] * cap
        stack = [(1, 0, cap)]
        while stack:
            node, lo, ln = stack.pop()
            t = self._tag[node] if node < cap else _NO_TAG
            if t != _NO_TAG:
                if t == _FREE:
                    bits[lo : lo + ln] = [False] * ln
                continue
            if node >= cap:
                bits[lo] = self._best[node] == 0
                continue
            half = ln >> 1
            stack.append((2 * node, lo, half))
            stack.append((2 * node + 1, lo + half, half))
        return bits


def _union_length(intervals: list[tuple[int, int]]) -> int:
    """Total length of a union of half-open intervals."""
    total = 0
    reach: int | None = None
    for lo, hi in sorted(intervals):
        if reach is None or lo >= reach:
            total += hi - lo
            reach = hi
        elif hi > reach:
            total += hi - reach
            reach = hi
    return total


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
        # The same combination _pull performs (no lazy tags exist yet).
        best[node] = max(best[left], best[right], suf[left] + pre[right])
        pre[node] = pre[left] if pre[left] < lens[left] else lens[left] + pre[right]
        suf[node] = suf[right] if suf[right] < lens[right] else lens[right] + suf[left]
    return cap, log, tuple(lens), tuple(best), tuple(pre), tuple(suf)
