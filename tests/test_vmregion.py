"""Tests of ``mmusim.kernel.vmregion``: Zephyr's virtual-region allocator in O(log N).

The fast allocator is compared, step by step, with ``ZephyrBitmap``: a literal model of Zephyr's
``virt_region_*`` over a Python list of bits (bit 0 = top page) and a first fit that scans from
bit 0, as ``sys_bitarray_alloc`` does. The model carries the same two documented deviations as
the allocator (double free asserts; the failure path frees what it took unless
``zephyr_free_bug``), so every difference is a bug in the fast one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmusim.kernel.routines import KernelAssert
from mmusim.kernel.vmregion import VirtRegionAllocator

PAGE = 4096


# --------------------------------------------------------------------------- reference model


class ZephyrBitmap:
    """Zephyr's ``virt_region_init/alloc/free`` transcribed onto ``list[bool]`` (True = set)."""

    def __init__(
        self,
        base: int,
        size: int,
        free_start: int,
        *,
        page: int,
        reserved_top: int,
        zephyr_free_bug: bool = False,
    ) -> None:
        self.page = page
        self.base = base
        self.end = base + size
        self.free_start = free_start
        self.reserved_top = reserved_top
        self.bug = zephyr_free_bug
        self.bits = [False] * (size // page)
        # virt_region_init()
        if reserved_top > 0:
            self.set_region(reserved_top // page, 0)
        num = free_start - base
        offset = (self.end - base - num) // page  # virt_to_bitmap_offset(START, num)
        self.set_region(num // page, offset)

    # sys_bitarray_* -----------------------------------------------------------------------

    def set_region(self, num_bits: int, offset: int) -> None:
        n = len(self.bits)
        if num_bits == 0 or num_bits > n or offset >= n or offset + num_bits - 1 >= n:
            return  # -EINVAL
        for i in range(offset, offset + num_bits):
            self.bits[i] = True

    def bitarray_alloc(self, num_bits: int) -> int | None:
        n = len(self.bits)
        if num_bits == 0 or num_bits > n:
            return None  # -EINVAL
        for off in range(0, n - num_bits + 1):  # first fit from bit 0
            if not any(self.bits[off : off + num_bits]):
                for i in range(off, off + num_bits):
                    self.bits[i] = True
                return off
        return None  # -ENOSPC

    def bitarray_free(self, num_bits: int, offset: int) -> int:
        n = len(self.bits)
        if num_bits == 0 or num_bits > n or offset >= n or offset + num_bits - 1 >= n:
            return -22  # -EINVAL
        if not all(self.bits[offset : offset + num_bits]):
            return -14  # -EFAULT
        for i in range(offset, offset + num_bits):
            self.bits[i] = False
        return 0

    # virt_region_* --------------------------------------------------------------------------

    def virt_region_free(self, vaddr: int, size: int) -> None:
        if size < 0:
            raise KernelAssert("virt_region_free: negative")
        if not (vaddr >= self.free_start and vaddr + size - 1 < self.end - self.reserved_top):
            raise KernelAssert("virt_region_free: invalid virtual address region")
        if size == 0:
            return
        if vaddr % self.page or size % self.page:
            raise KernelAssert("virt_region_free: unaligned")
        offset = (self.end - vaddr - size) // self.page
        if self.bitarray_free(size // self.page, offset) != 0:
            # Zephyr ignores -EFAULT; the allocator (and so this model) asserts.
            raise KernelAssert("virt_region_free: region not wholly allocated")

    def virt_region_alloc(self, size: int, align: int) -> int | None:
        page = self.page
        if align <= 0 or align % page:
            raise KernelAssert("virt_region_alloc: align")
        if size < 0 or size % page:
            raise KernelAssert("virt_region_alloc: size")
        num_bits = (size + align - page) // page
        alloc_size = num_bits * page
        offset = self.bitarray_alloc(num_bits)
        if offset is None:
            return None
        dest = self.end - offset * page - alloc_size  # virt_from_bitmap_offset()
        if alloc_size > size:
            aligned = (dest + align - 1) // align * align  # ROUND_UP
            self.virt_region_free(dest, aligned - dest)
            if (dest + alloc_size) - (aligned + size) > 0:
                self.virt_region_free(aligned + size, (dest + alloc_size) - (aligned + size))
            dest = aligned
        if dest < self.free_start:
            if self.bug:
                self.bitarray_free(size, offset)
            elif size > 0:
                self.bitarray_free(size // page, (self.end - dest - size) // page)
            return None
        return dest

    def free_runs(self) -> list[tuple[int, int]]:
        runs: list[tuple[int, int]] = []
        start = None
        for i, b in enumerate([*self.bits, True]):
            if not b and start is None:
                start = i
            elif b and start is not None:
                runs.append((self.end - i * self.page, (i - start) * self.page))
                start = None
        return sorted(runs)


# --------------------------------------------------------------------------- differential test


@dataclass
class Config:
    base: int
    pages: int
    free_start: int
    page: int
    reserved_top: int
    bug: bool

    def both(self) -> tuple[VirtRegionAllocator, ZephyrBitmap]:
        args = (self.base, self.pages * self.page, self.free_start)
        kw = dict(page=self.page, reserved_top=self.reserved_top, zephyr_free_bug=self.bug)
        return VirtRegionAllocator(*args, **kw), ZephyrBitmap(*args, **kw)


def _outcome(fn: Callable[..., int | None], *args: int) -> tuple[str, object]:
    """("ok", result) or ("assert", (function, first word of the KernelAssert message))."""
    try:
        return ("ok", fn(*args))
    except KernelAssert as e:
        head, _, rest = str(e).partition(":")
        words = rest.split()
        return ("assert", (head, words[0] if words else ""))


def run_sequence(cfg: Config, ops: list[tuple[int, int, int, int]]) -> None:
    """Apply ``ops`` to both allocators; compare every result, the free runs and ``_check()``."""
    fast, ref = cfg.both()
    fast._check()
    assert fast.free_runs() == ref.free_runs()
    page = cfg.page
    live: list[tuple[int, int]] = []
    for kind, a, b, c in ops:
        if kind == 10:  # fill the window with one-page regions until an allocation fails
            while True:
                fo = _outcome(fast.alloc, page)
                ro = _outcome(ref.virt_region_alloc, page, page)
                assert fo == ro, ("fill", fo, ro)
                result = fo[1]
                if not isinstance(result, int):
                    break
                live.append((result, page))
        elif kind <= 4 or (kind <= 7 and not live):  # alloc (most common)
            pages = a % 17  # 0..16 pages; 0 exercises the -EINVAL / size-0 paths
            align = page * (1, 2, 4)[b % 3]
            fo = _outcome(fast.alloc, pages * page, align)
            ro = _outcome(ref.virt_region_alloc, pages * page, align)
            result = fo[1]
            if fo[0] == "ok" and isinstance(result, int) and pages > 0:
                live.append((result, pages * page))
        elif kind <= 7:  # free a live region, whole or a page-aligned part of it
            addr, size = live.pop(a % len(live))
            if kind == 7 and size > page:
                cut = (b % (size // page - 1) + 1) * page
                live.append((addr + cut, size - cut))
                size = cut
            fo = _outcome(fast.free, addr, size)
            ro = _outcome(ref.virt_region_free, addr, size)
        else:  # a free of an arbitrary range: often a bad one
            addr = cfg.base + (a % (cfg.pages + 2) - 1) * page + (page // 2 if c % 7 == 0 else 0)
            size = (b % 6) * page + (1 if c % 11 == 0 else 0) - (2 * page if c % 13 == 0 else 0)
            fo = _outcome(fast.free, addr, size)
            ro = _outcome(ref.virt_region_free, addr, size)
            if fo == ("ok", None):  # it was allocated: forget live regions that overlap it
                live = [(x, s) for x, s in live if x + s <= addr or x >= addr + size]
        assert fo == ro, (kind, a, b, c, fo, ro)
        fast._check()
        assert fast.free_runs() == ref.free_runs()
        assert fast.allocated_pages == sum(ref.bits)
        assert fast.free_pages == len(ref.bits) - sum(ref.bits)
    for i, bit in enumerate(ref.bits):
        page_addr = cfg.base + (cfg.pages - 1 - i) * page
        assert fast.is_allocated(page_addr) == bit
        assert fast.bit_offset(page_addr + page // 2) == i


@st.composite
def configs(draw: st.DrawFn) -> Config:
    page = draw(st.sampled_from([PAGE, PAGE, PAGE, 2, 8]))
    pages = draw(st.integers(16, 512))
    base = draw(st.integers(0, 8)) * 1024 * page
    reserved = draw(st.sampled_from([0, 0, 1, 3])) * page
    # Few boot pages often: then the window fills down to its base, where the only page below
    # an unaligned free_start lies.
    fs_pages = draw(st.sampled_from([0, 1, 2]) | st.integers(0, pages - reserved // page))
    # K_MEM_VM_FREE_START is page-aligned on real builds; an unaligned one reaches the
    # allocator's "below free_start" failure path.
    fs_extra = draw(st.sampled_from([0, 0, 1, page // 2, page - 1]))
    free_start = base + fs_pages * page + (fs_extra if fs_pages < pages - reserved // page else 0)
    bug = draw(st.booleans())
    return Config(base, pages, free_start, page, reserved, bug)


ops_strategy = st.lists(
    st.tuples(
        st.integers(0, 10), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6)
    ),
    min_size=20,
    max_size=80,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs(), ops=ops_strategy)
def test_matches_zephyr_bitmap_hypothesis(
    cfg: Config, ops: list[tuple[int, int, int, int]]
) -> None:
    run_sequence(cfg, ops)


@pytest.mark.parametrize("seed", range(12))
def test_matches_zephyr_bitmap_long_random_sequences(seed: int) -> None:
    """Longer sequences than Hypothesis draws: windows fill up, fragment, and drain."""
    rng = random.Random(seed)
    page = rng.choice([PAGE, PAGE, 2])
    pages = rng.choice([16, 31, 64, 200, 512])
    reserved = rng.choice([0, page])
    fs_pages = rng.choice([0, 1, rng.randrange(0, pages // 3)])
    free_start = 0x100 * page + fs_pages * page + rng.choice([0, 1, page // 2])
    cfg = Config(0x100 * page, pages, free_start, page, reserved, bool(seed % 2))
    ops = [
        (rng.randrange(11), rng.randrange(10**6), rng.randrange(10**6), rng.randrange(10**6))
        for _ in range(300)
    ]
    run_sequence(cfg, ops)


# --------------------------------------------------------------------------- Zephyr behaviours

BASE = 0x4000_0000
VM_SIZE = 0x40_0000  # 1024 pages
END = BASE + VM_SIZE
IMAGE_END = BASE + 0x12_3000


def fresh(reserved_top: int = 0, **kw: bool) -> VirtRegionAllocator:
    return VirtRegionAllocator(BASE, VM_SIZE, IMAGE_END, reserved_top=reserved_top, **kw)


def test_boot_reservation() -> None:
    vm = fresh(reserved_top=PAGE)
    assert vm.free_runs() == [(IMAGE_END, END - PAGE - IMAGE_END)]
    assert vm.allocated_pages == (IMAGE_END - BASE) // PAGE + 1
    assert vm.is_allocated(BASE) and vm.is_allocated(IMAGE_END - 1)
    assert not vm.is_allocated(IMAGE_END) and not vm.is_allocated(END - PAGE - 1)
    assert vm.is_allocated(END - 1)
    assert vm.bit_offset(END - 1) == 0 and vm.bit_offset(BASE) == VM_SIZE // PAGE - 1
    vm._check()


def test_regions_grow_downward_from_the_top() -> None:
    for reserved in (0, PAGE):
        vm = fresh(reserved_top=reserved)
        top = END - reserved
        addrs = [vm.alloc(3 * PAGE) for _ in range(5)]
        assert addrs == [top - 3 * PAGE * (i + 1) for i in range(5)]
        assert vm.alloc(PAGE, 4 * PAGE) == (top - 15 * PAGE - PAGE) // (4 * PAGE) * (4 * PAGE)
        vm._check()


def test_same_address_after_free_and_equal_size_alloc() -> None:
    """Zephyr's test_k_mem_map_unmap (tests/kernel/mem_protect/mem_map/src/main.c): k_mem_map(PAGE)
    returns the same address every time."""
    vm = fresh()
    others = [vm.alloc(2 * PAGE) for _ in range(3)]  # some live regions above
    first = vm.alloc(PAGE + 2 * PAGE)
    assert first is not None
    for _ in range(10):
        vm.free(first, 3 * PAGE)
        assert vm.alloc(3 * PAGE) == first
    # A hole in the middle is refilled at the same address too.
    assert others[1] is not None
    vm.free(others[1], 2 * PAGE)
    assert vm.alloc(2 * PAGE) == others[1]
    vm._check()


def test_alloc_fails_when_nothing_fits() -> None:
    vm = fresh()
    regions = []
    while (r := vm.alloc(PAGE)) is not None:
        regions.append(r)
    assert vm.free_pages == 0 and len(regions) == (END - IMAGE_END) // PAGE
    for r in regions[::2]:
        vm.free(r, PAGE)
    assert vm.free_pages == len(regions[::2])
    assert vm.alloc(2 * PAGE) is None  # plenty of free pages, no two adjacent
    assert vm.alloc(PAGE, 2 * PAGE) is None  # alignment needs two adjacent pages too
    assert vm.alloc(PAGE) == regions[0]  # the highest hole
    assert vm.alloc(VM_SIZE + PAGE) is None  # more bits than the bitmap: -EINVAL
    assert vm.alloc(0) is None  # 0 bits: -EINVAL
    vm._check()


@pytest.mark.parametrize("bug", [False, True])
def test_alloc_fails_when_the_only_fit_is_below_free_start(bug: bool) -> None:
    """With an unaligned free_start, Zephyr's init leaves the page at the window base free."""
    free_start = BASE + 5 * PAGE + 0x800
    vm = VirtRegionAllocator(BASE, VM_SIZE, free_start, zephyr_free_bug=bug)
    # Zephyr's arithmetic reserves pages 1..5 (the one holding free_start included), not page 0.
    assert vm.free_runs() == [(BASE, PAGE), (BASE + 6 * PAGE, END - BASE - 6 * PAGE)]
    while vm.alloc(PAGE) is not None and vm.free_runs() != [(BASE, PAGE)]:
        pass
    assert vm.free_runs() == [(BASE, PAGE)]
    assert vm.alloc(PAGE) is None  # the only fit is below free_start
    if bug:
        # sys_bitarray_free(&bitmap, size=4096, offset=1023): -EINVAL, the page is leaked.
        assert vm.is_allocated(BASE) and vm.free_pages == 0
    else:
        assert not vm.is_allocated(BASE) and vm.free_runs() == [(BASE, PAGE)]
    assert vm.alloc(PAGE) is None
    vm._check()


def test_alignment_frees_head_and_tail() -> None:
    vm = fresh()
    a = vm.alloc(PAGE)  # top page taken: the next run's top is END - PAGE
    assert a == END - PAGE
    b = vm.alloc(2 * PAGE, 4 * PAGE)  # 5 bits at [END-6P, END-P); aligned start END-4P
    assert b == END - 4 * PAGE
    # Head [END-6P, END-4P) and tail [END-2P, END-P) were given back.
    assert vm.free_runs()[-1] == (END - 2 * PAGE, PAGE)
    assert not vm.is_allocated(END - 5 * PAGE)
    assert vm.alloc(PAGE) == END - 2 * PAGE
    vm._check()


@pytest.mark.parametrize("reserved_top", [0, PAGE])
def test_exhaustion_count_formula(reserved_top: int) -> None:
    """Zephyr's test_k_mem_map_exhaustion (tests/kernel/mem_protect/mem_map/src/main.c) with plenty
    of free frames.

    Expected count = min(free/PAGE, (addr + 2*PAGE - K_MEM_VM_FREE_START) / (3*PAGE)) with addr
    the first mapping (the usable page between its guards); free frames do not limit here.
    """
    vm = fresh(reserved_top=reserved_top)
    first = vm.alloc(3 * PAGE)  # k_mem_map(PAGE): PAGE + 2 guard pages
    assert first is not None
    addr = first + PAGE
    expected = (addr + 2 * PAGE - IMAGE_END) // (3 * PAGE)
    count = 1
    while vm.alloc(3 * PAGE) is not None:
        count += 1
    assert count == expected
    assert vm.free_pages == ((END - reserved_top - IMAGE_END) // PAGE) % 3
    vm._check()


# --------------------------------------------------------------------------- bad frees


def test_bad_frees_assert() -> None:
    vm = fresh(reserved_top=PAGE)
    r = vm.alloc(2 * PAGE)
    assert r == END - 3 * PAGE
    before = vm.free_runs()
    bad = [
        (IMAGE_END - PAGE, PAGE),  # kernel image: below free_start
        (IMAGE_END - PAGE, 2 * PAGE),  # straddles free_start
        (END - PAGE, PAGE),  # the reserved top page
        (r, 3 * PAGE),  # runs into the reserved page
        (BASE - PAGE, PAGE),  # below the window
        (END, PAGE),  # above the window
        (r + 1, PAGE),  # unaligned address
        (r, PAGE + 1),  # unaligned size
        (r, -PAGE),  # negative size
        (r - PAGE, 2 * PAGE),  # overlaps a free page
        (IMAGE_END, PAGE),  # never allocated
    ]
    for addr, size in bad:
        with pytest.raises(KernelAssert, match=r"^virt_region_free: "):
            vm.free(addr, size)
        assert vm.free_runs() == before, (hex(addr), size)
    vm.free(r, 2 * PAGE)
    with pytest.raises(KernelAssert, match=r"^virt_region_free: .*not wholly allocated"):
        vm.free(r, 2 * PAGE)  # double free
    vm.free(r, 0)  # empty: a no-op, as in Zephyr
    with pytest.raises(KernelAssert, match=r"^virt_region_alloc: "):
        vm.alloc(PAGE + 1)
    with pytest.raises(KernelAssert, match=r"^virt_region_alloc: "):
        vm.alloc(PAGE, PAGE // 2)
    vm._check()


def test_constructor_rejects_bad_windows() -> None:
    with pytest.raises(ValueError):
        VirtRegionAllocator(BASE + 1, VM_SIZE, IMAGE_END)
    with pytest.raises(ValueError):
        VirtRegionAllocator(BASE, VM_SIZE, BASE - 1)
    with pytest.raises(ValueError):
        VirtRegionAllocator(BASE, VM_SIZE, IMAGE_END, reserved_top=100)
    with pytest.raises(ValueError):
        fresh().is_allocated(END)


def test_check_reports_corruption(capsys: pytest.CaptureFixture[str]) -> None:
    vm = VirtRegionAllocator(0, 64 * PAGE, 4 * PAGE)
    vm._bits._best[1] += 1  # corrupt the root
    with pytest.raises(AssertionError, match="_check: node 1"):
        vm._check()
    assert "free runs" in capsys.readouterr().out


# --------------------------------------------------------------------------- scaling (not timed)


def _visits_per_op(live: int) -> tuple[int, dict[str, int]]:
    """Tree height, and node visits of one alloc and one free, with ``live`` live regions.

    The window has 4*live + 64 pages. The live one-page regions alternate with one-page holes
    at the top, so a first fit for two pages by scanning would step over ``live`` holes.
    """
    vm = VirtRegionAllocator(0, (4 * live + 64) * PAGE, 16 * PAGE)
    big = vm.alloc(2 * live * PAGE)
    assert big is not None
    for i in range(live):
        vm.free(big + 2 * i * PAGE, PAGE)
    counts: dict[str, int] = {}
    for name, size in (("alloc2", 2 * PAGE), ("alloc1", PAGE)):
        vm.ops = 0
        addr = vm.alloc(size)
        assert addr is not None
        counts[name] = vm.ops
        vm.ops = 0
        vm.free(addr, size)
        counts["free" + name[-1]] = vm.ops
    vm._check()
    return (vm.num_pages - 1).bit_length(), counts


def test_node_visits_grow_logarithmically() -> None:
    (h_small, small), (h_mid, mid), (h_large, large) = (
        _visits_per_op(n) for n in (10, 1_000, 100_000)
    )
    print(
        f"tree heights {h_small}/{h_mid}/{h_large}; node visits per op at "
        f"10 / 1,000 / 100,000 live regions: {small} / {mid} / {large}"
    )
    assert (h_small, h_mid, h_large) == (7, 12, 19)
    for op in small:
        # 10,000 times the live regions: a scan would visit ~10,000x more; the tree ~19/7x.
        assert large[op] <= 3 * small[op], (op, small, large)
        for height, counts in ((h_small, small), (h_mid, mid), (h_large, large)):
            assert counts[op] <= 8 * (height + 1), (op, height, counts)
