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
  offset)``, ``virt_region_alloc`` in ``kernel/mmu.c``), not the ``num_bits`` it took. Here the
  failure path releases what the allocation still holds, unless ``zephyr_free_bug=True``.
* Freeing pages that are not all allocated (a double free, an overlap with a free page): Zephyr's
  ``sys_bitarray_free`` refuses with ``-EFAULT``, which ``virt_region_free`` ignores -- a silent
  no-op that leaves the caller believing the region is gone (and leaks any allocated pages of a
  partly-free range). Here it is a ``KernelAssert``; so are unaligned frees.

Every assertion is a :class:`~mmusim.kernel.routines.KernelAssert` whose message starts with the Zephyr
function that asserts (``virt_region_free: ...``, ``virt_region_alloc: ...``).

Data structure: the bitmap is a ``BitArray`` (``mmusim.kernel.bitarray``): a segment tree that
answers first fit and range assignment in O(log N).
"""

from __future__ import annotations

from mmusim.kernel.bitarray import ALLOCATED, FREE, BitArray
from mmusim.kernel.routines import KernelAssert

__all__ = ["VirtRegionAllocator"]


# DEVIATION(virt-region-free-bits): virt_region_alloc's failure path frees the right number of
# bits; Zephyr passes a byte count (zephyr_free_bug=True reproduces it).
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
        "_runs",
        "_base",
        "_end",
        "_page",
        "_free_start",
        "_reserved_top",
        "_zephyr_free_bug",
        "_mutant_double_alloc",
        "_allocs",
        "_bits",
        "_allocated",
        "_boot_bits",
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

        # Bit i is the page i + 1 pages below the top of the window.
        self._bits = BitArray(size // page)
        self._runs: tuple[int, list[tuple[int, int]]] = (-1, [])  # free_runs at a bits version
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
            self._bits.assign(off, off + bits, ALLOCATED)
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
        return self._bits.n

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
        return self._bits.n - self._allocated

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
        return self._bits.test((self._end - 1 - addr) // self._page)

    @property
    def ops(self) -> int:
        """Segment-tree nodes touched so far (complexity tests may reset it)."""
        return self._bits.ops

    @ops.setter
    def ops(self, value: int) -> None:
        self._bits.ops = value

    def free_runs(self) -> list[tuple[int, int]]:
        """The free runs as ``(addr, size)`` in ascending address order.

        Runtime: O(R log N) for R maximal free/allocated runs (only nodes holding both free and
        allocated pages are opened).
        """
        if self._runs[0] != self._bits.version:  # the explorer asks at every state
            self._runs = (self._bits.version, self._free_runs_now())
        return list(self._runs[1])

    def _free_runs_now(self) -> list[tuple[int, int]]:
        page, end = self._page, self._end
        return [(end - hi * page, (hi - lo) * page) for lo, hi in reversed(self._bits.free_runs())]

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
        if num_bits == 0 or num_bits > self._bits.n:
            return None
        offset = self._bits.first_fit(num_bits)
        if offset < 0:
            return None  # -ENOSPC: "insufficient virtual address space"
        self._bits.assign(offset, offset + num_bits, ALLOCATED)
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
                self._bits.assign(first, first + size // page, FREE)
                self._allocated -= size // page
            return None
        if self._mutant_double_alloc and size > 0:
            self._allocs += 1
            if self._allocs % 2 == 0:
                # MUTANT (SIM_MUTANT_VA_DOUBLE_ALLOC): hand the region out, but leave it free.
                first = (self._end - dest - size) // page
                self._bits.assign(first, first + size // page, FREE)
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
        """Invariants; on failure print the state, then raise ``AssertionError``: the bitmap's
        structure (``BitArray._check``), the page counter, and that the boot reservations are
        still allocated. Runtime: O(N)."""
        problems = self._bits._check()
        bits = self._bits.materialise()
        allocated = sum(bits[: self._bits.n])
        if allocated != self._allocated:
            problems.insert(0, f"allocated counter {self._allocated} != {allocated} set bits")
        for off, count in self._boot_bits:
            if not all(bits[off : off + count]):
                problems.append(f"boot reservation bits [{off}, {off + count}) not all set")
        if self._runs[0] == self._bits.version:
            fresh = self._free_runs_now()
            if self._runs[1] != fresh:
                problems.append(f"free_runs memo {self._runs[1]} != the bitmap's {fresh}")
        if problems:
            print(self._dump())
            raise AssertionError("VirtRegionAllocator._check: " + "; ".join(problems[:10]))

    # ------------------------------------------------------------------ internals

    def __repr__(self) -> str:
        return (
            f"VirtRegionAllocator(base={self._base:#x}, end={self._end:#x}, page={self._page:#x}, "
            f"free_start={self._free_start:#x}, reserved_top={self._reserved_top:#x}, "
            f"allocated_pages={self._allocated}/{self._bits.n})"
        )

    def _dump(self) -> str:
        lines = [repr(self)]
        runs = self.free_runs()
        lines.append(f"free runs ({len(runs)}):")
        lines.extend(f"  [{a:#x}, {a + s:#x}) {s // self._page} pages" for a, s in runs[:50])
        if len(runs) > 50:
            lines.append(f"  ... {len(runs) - 50} more")
        if self._bits.n <= 1024:
            bits = self._bits.materialise()[: self._bits.n]
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
        if self._bits.any_free(first, first + num_bits):
            if self._mutant_double_alloc:
                return  # MUTANT (SIM_MUTANT_VA_DOUBLE_ALLOC): Zephyr's silent no-op
            raise KernelAssert(
                f"virt_region_free: region {addr:#x} ({size:#x}) is not wholly allocated "
                f"(double free?)"
            )
        self._bits.assign(first, first + num_bits, FREE, pushed=True)
        self._allocated -= num_bits

    def _bitarray_free(self, num_bits: int, offset: int) -> None:
        """``sys_bitarray_free(&bitmap, num_bits, offset)`` with its error returns. O(log N)."""
        n = self._bits.n
        if num_bits == 0 or num_bits > n or offset >= n or offset + num_bits - 1 >= n:
            return  # -EINVAL
        if self._bits.any_free(offset, offset + num_bits):
            return  # -EFAULT
        self._bits.assign(offset, offset + num_bits, FREE, pushed=True)
        self._allocated -= num_bits


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
