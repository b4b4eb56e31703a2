"""A page-table builder: map and unmap pages and ranges in the architectural format.

Mechanism only (xv6's ``walk``/``mappages``): the caller chooses addresses, flags and page sizes;
table frames come from an allocator passed in, so the kernel keeps its page-frame accounting.

Intermediate entries are created permissive (P, R/W, U/S; in PAE a PDPTE gets only P, its other
bits being reserved), so the leaf alone decides the rights -- the convention of Zephyr's x86 MMU
code and of most kernels. Tables are never freed when they become empty (Zephyr does not either);
``table_frames`` lists every frame the builder took.

``lookup`` is a software walk: it neither checks rights nor sets A/D, so tools can inspect a
mapping without disturbing it. Errors name their function (``PageTables.map: ...``), as xv6's
panics do.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator

import attrs

from mmusim.hw.paging import MODE_32, MODE_IA32E, PagingMode, PteFlags, walk_plan
from mmusim.hw.physmem import FRAME_SIZE, PhysMem

_P = int(PteFlags.P)
_PS = int(PteFlags.PS)
_TABLE = int(PteFlags.P | PteFlags.RW | PteFlags.US)


# The digest of a table frame's bytes, with the bytes it was computed from, by frame address: a
# pure memo shared by every PageTables. Most table frames hold the same bytes from one state to
# the next, and from one boot to the next (the explorer boots thousands of kernels): comparing
# 4 KiB (a memcmp) is 30 times cheaper than hashing them. A frame whose bytes differ from the
# remembered ones is hashed again.
_FRAME_DIGESTS: dict[int, tuple[bytes, bytes]] = {}


def frame_digest(pa: int, frame: bytes | bytearray) -> bytes:
    """A 16-byte digest of the table frame at ``pa`` holding ``frame`` (memoized by content)."""
    seen = _FRAME_DIGESTS.get(pa)
    if seen is not None and seen[0] == frame:
        return seen[1]
    digest = hashlib.blake2b(frame, digest_size=16).digest()
    _FRAME_DIGESTS[pa] = (bytes(frame), digest)
    return digest


@attrs.frozen
class TablesImage:
    """What ``PageTables.snapshot`` saw: the tables' shape (mode, MAXPHYADDR, last level, entry
    size), their frames in the order they were taken (the root first) and the frames' bytes."""

    shape: tuple[str, int, str, int]
    frames: tuple[int, ...]
    data: tuple[bytes, ...]


class PageTables:
    """Page tables of one address space, rooted at ``root`` (the value for CR3)."""

    def __init__(
        self,
        mem: PhysMem,
        mode: PagingMode,
        alloc_frame: Callable[[], int],
        *,
        maxphyaddr: int = 40,
        pse: bool = True,
        nxe: bool = True,
    ) -> None:
        self.mem = mem
        self.mode = mode
        self._alloc = alloc_frame
        self._plan = walk_plan(mode, nxe, pse, maxphyaddr, True)
        self._esize = mode.entry_size
        self.table_frames: list[int] = []
        self._memo: dict[int, tuple[str, int, int, int] | None] | None = None  # see frozen()
        self._frozen_digest: bytes | None = None  # digest() while frozen
        # The walk of ``_lookup``, level by level, as plain values: (shift, index mask, address
        # mask, large page size or 0, level name, is the last level) -- the hot path of the
        # kernel's mapping code and of the invariant checks.
        last = len(self._plan.levels) - 1
        self._walk = tuple(
            (lp.shift, lp.index_mask, lp.addr_mask, lp.large_size, lp.level.name, i == last)
            for i, lp in enumerate(self._plan.levels)
        )
        self._digest_seed = repr((self._walk, self._esize)).encode()  # see digest()
        self.root = self._new_table()

    # -- entries ----------------------------------------------------------------------------

    def _read(self, pa: int) -> int:
        return self.mem.read_u64(pa) if self._esize == 8 else self.mem.read_u32(pa)

    def _write(self, pa: int, value: int) -> None:
        if self._esize == 8:
            self.mem.write_u64(pa, value)
        else:
            self.mem.write_u32(pa, value)

    def _new_table(self) -> int:
        pa = self._alloc()
        if pa & (FRAME_SIZE - 1):
            raise ValueError(f"PageTables: allocator returned unaligned frame {pa:#x}")
        if self.mode is not MODE_IA32E and pa >> 32:
            raise ValueError(f"PageTables: table frame {pa:#x} above 4 GiB ({self.mode.title})")
        self.mem.zero_frame(pa >> 12)
        self.table_frames.append(pa)
        return pa

    def _slot(self, table: int, level: int, va: int) -> int:
        lp = self._plan.levels[level]
        return table + ((va >> lp.shift) & lp.index_mask) * self._esize

    def _check_va(self, fn: str, va: int, size: int) -> None:
        if va & (size - 1):
            raise ValueError(f"PageTables.{fn}: {va:#x} not aligned to {size:#x}")
        if self.mode is MODE_IA32E:
            top = va >> 47
            if top not in (0, 0x1FFFF):
                raise ValueError(f"PageTables.{fn}: {va:#x} is not canonical")
        elif not 0 <= va < 1 << 32:
            raise ValueError(f"PageTables.{fn}: {va:#x} is not a 32-bit address")

    def _leaf_level(self, fn: str, page_size: int) -> int:
        for i, lp in enumerate(self._plan.levels):
            if (i == len(self._plan.levels) - 1 and page_size == FRAME_SIZE) or (
                lp.large_size == page_size
            ):
                return i
        raise ValueError(
            f"PageTables.{fn}: page size {page_size:#x} not available in {self.mode.title}"
        )

    # -- map / unmap ------------------------------------------------------------------------

    def map(self, va: int, pa: int, flags: int, page_size: int = FRAME_SIZE) -> None:
        """Map the page at ``va`` to frame ``pa`` with ``flags`` (P is implied). Raises on a remap."""
        leaf = self._map_checks(va, pa, page_size)
        slot = self._table_slot("map", va, leaf, create=True)
        assert slot is not None
        self._map_at(slot, va, pa, flags, page_size, leaf)

    def _map_checks(self, va: int, pa: int, page_size: int) -> int:
        """``map``'s argument checks; returns the level of the leaf entry."""
        self._check_va("map", va, page_size)
        if pa & (page_size - 1):
            raise ValueError(f"PageTables.map: frame {pa:#x} not aligned to {page_size:#x}")
        return self._leaf_level("map", page_size)

    def _map_at(self, slot: int, va: int, pa: int, flags: int, page_size: int, leaf: int) -> None:
        """Write the leaf entry at ``slot`` (the entry for ``va``) unless it is present."""
        if self._read(slot) & _P:
            raise ValueError(f"PageTables.map: remap of {va:#x} (entry at {slot:#x})")
        value = self._encode_frame(pa, page_size, leaf) | int(flags) | _P
        if leaf != len(self._plan.levels) - 1:
            value |= _PS
        self._write(slot, value)

    def _encode_frame(self, pa: int, page_size: int, leaf: int) -> int:
        lp = self._plan.levels[leaf]
        if lp.pse36 and page_size != FRAME_SIZE:  # 4M page: PA bits 39:32 go to PDE bits 20:13
            if pa >> min(self._plan.maxphyaddr, 40):  # PSE-36 reaches 2^min(M, 40)
                raise ValueError(f"PageTables.map: frame {pa:#x} beyond PSE-36 reach")
            return (pa & 0xFFC0_0000) | ((pa >> 32) & 0xFF) << 13
        limit = 1 << self._plan.maxphyaddr
        if pa >= limit or (self.mode is MODE_32 and pa >> 32):
            raise ValueError(f"PageTables.map: frame {pa:#x} beyond MAXPHYADDR")
        return pa

    def _table_slot(self, fn: str, va: int, leaf: int, create: bool) -> int | None:
        """Address of the entry for ``va`` at level ``leaf``, creating tables on the way if asked."""
        table = self.root
        for level in range(leaf):
            slot = self._slot(table, level, va)
            e = self._read(slot)
            if not e & _P:
                if not create:
                    return None
                table = self._new_table()
                pointer = _P if self._plan.levels[level].level.register else _TABLE
                self._write(slot, table | pointer)
                continue
            lp = self._plan.levels[level]
            if lp.large_size and e & _PS:
                raise ValueError(
                    f"PageTables.{fn}: {va:#x} lies in a large page at level {lp.level.name}"
                )
            table = e & lp.addr_mask
        return self._slot(table, leaf, va)

    def unmap(self, va: int, page_size: int = FRAME_SIZE) -> int:
        """Clear the leaf mapping ``va``; returns the old entry. Raises if it was not mapped.

        The TLBs are not touched: invalidating them (locally and on the other CPUs) is the
        caller's job, as on hardware.
        """
        self._check_va("unmap", va, page_size)
        slot = self._table_slot("unmap", va, self._leaf_level("unmap", page_size), create=False)
        old = self._read(slot) if slot is not None else 0
        if slot is None or not old & _P:
            raise ValueError(f"PageTables.unmap: {va:#x} is not mapped")
        self._write(slot, 0)
        return old

    def clear(self, va: int) -> int:
        """Clear the 4K leaf entry of ``va`` if it is present; returns the old entry, or 0 when it
        was not present (then nothing is written, and no table is made): ``lookup`` then ``unmap``
        in one walk. Like ``unmap``, raises if ``va`` lies in a large page, and leaves TLB
        invalidation to the caller."""
        self._check_va("unmap", va, FRAME_SIZE)
        slot = self._table_slot("unmap", va, len(self._plan.levels) - 1, create=False)
        old = self._read(slot) if slot is not None else 0
        if old & _P:
            self._write(slot, 0)  # type: ignore[arg-type]  # old & P: slot is not None
            return old
        return 0

    def map_range(
        self, va: int, pa: int, size: int, flags: int, page_size: int = FRAME_SIZE
    ) -> None:
        """Map ``size`` bytes (a multiple of ``page_size``) from ``va`` to ``pa`` onwards.

        The same entries, and the same error at the same page (the pages before it mapped), as
        ``map`` page by page; but the tables are walked once per leaf table, not once per page.
        Within one leaf table the checks of the first page hold for the others: a leaf table
        covers an aligned 2M/4M (or larger) span, which the canonical and 4 GiB limits never
        split, and ``pa + off`` keeps ``pa``'s alignment."""
        if size % page_size:
            raise ValueError(
                f"PageTables.map_range: size {size:#x} not a multiple of {page_size:#x}"
            )
        slot = span = 0
        leaf = -1
        for off in range(0, size, page_size):
            v = va + off
            if v & (span - 1) == 0 or leaf < 0:  # the first page, or a new leaf table
                leaf = self._map_checks(v, pa + off, page_size)
                lp = self._plan.levels[leaf]
                span = (lp.index_mask + 1) << lp.shift  # what one leaf table covers
                found = self._table_slot("map", v, leaf, create=True)
                assert found is not None
                slot = found
            else:
                slot += self._esize
            self._map_at(slot, v, pa + off, flags, page_size, leaf)

    def unmap_range(self, va: int, size: int, page_size: int = FRAME_SIZE) -> list[int]:
        """Unmap ``size`` bytes from ``va``; returns the old leaf entries."""
        if size % page_size:
            raise ValueError(
                f"PageTables.unmap_range: size {size:#x} not a multiple of {page_size:#x}"
            )
        return [self.unmap(va + off, page_size) for off in range(0, size, page_size)]

    def set_flags(self, va: int, flags: int, page_size: int = FRAME_SIZE) -> int:
        """Replace the flag bits of the present leaf mapping ``va`` (keeping its frame). Returns
        the old entry. Like ``unmap``, it leaves TLB invalidation to the caller."""
        slot = self._table_slot("set_flags", va, self._leaf_level("set_flags", page_size), False)
        old = self._read(slot) if slot is not None else 0
        if slot is None or not old & _P:
            raise ValueError(f"PageTables.set_flags: {va:#x} is not mapped")
        frame_bits = old & ~(int(PteFlags.NX) | 0x1FF) & ~(_PS)
        keep_ps = old & _PS if page_size != FRAME_SIZE else 0
        self._write(slot, frame_bits | keep_ps | int(flags) | _P)
        return old

    # -- templates ---------------------------------------------------------------------------

    def snapshot(self) -> TablesImage:
        """The tables as they are: which frames hold them, in the order they were taken, and
        their bytes. ``restore`` lays them down again in another ``PhysMem``."""
        return TablesImage(
            self._shape(),
            tuple(self.table_frames),
            tuple(self.mem.read(pa, FRAME_SIZE) for pa in self.table_frames),
        )

    def _shape(self) -> tuple[str, int, str, int]:
        """What an image must match to be laid down here (``TablesImage.shape``)."""
        return (self.mode.name, self._plan.maxphyaddr, self._plan.levels[-1].level.name,
                self._esize)  # fmt: skip

    def restore(self, image: TablesImage) -> None:
        """Make these tables, still holding only their empty root, the ones ``image`` holds: take
        the same frames from the allocator (they must be what it hands out, in that order) and
        write their bytes. A boot that maps the same kernel image again copies it this way
        instead of walking and writing entry by entry."""
        if len(self.table_frames) != 1:
            raise ValueError("PageTables.restore: the tables are not empty")
        if image.shape != self._shape() or image.frames[0] != self.root:
            raise ValueError("PageTables.restore: an image of other tables")
        for want in image.frames[1:]:
            got = self._new_table()
            if got != want:
                raise ValueError(
                    f"PageTables.restore: the allocator gave frame {got:#x}, the image has {want:#x}"
                )
        for pa, data in zip(image.frames, image.data, strict=True):
            self.mem.write(pa, data)

    # -- inspection -------------------------------------------------------------------------

    def digest(self) -> bytes:
        """16 bytes that change when any byte of these tables does (A/D bits included): the
        frames' addresses, in the order they were taken (the root first), and each frame's
        ``frame_digest``, under the walk's shape. Equal digests mean every ``lookup`` gives the
        same answer, so a checker can keep what it found for a digest."""
        if self._frozen_digest is not None:
            return self._frozen_digest
        h = hashlib.blake2b(self._digest_seed, digest_size=16)
        mem = self.mem
        frames = mem._frames
        for pa in self.table_frames:
            # absent: all zeros (never written since zero_frame), or not yet read from an image
            frame = frames.get(pa >> 12) or mem._missing(pa >> 12)
            h.update(pa.to_bytes(8, "little"))
            if frame is not None:
                h.update(frame_digest(pa, frame))
        digest = h.digest()
        if self._memo is not None:  # frozen: the same until the block ends
            self._frozen_digest = digest
        return digest

    def lookup(self, va: int) -> tuple[str, int, int, int] | None:
        """Software walk: (level name, entry address, entry, page size) of the present leaf for
        ``va``, or None. No rights checks, no A/D updates."""
        memo = self._memo
        if memo is not None:
            page = va >> 12
            if page not in memo:
                memo[page] = self._lookup(va)
            return memo[page]
        return self._lookup(va)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Within the block the tables must not change: ``lookup`` answers each 4K page once
        (the kernel's invariant checks ask about the same pages many times), and ``digest``
        is computed once."""
        outer, outer_digest = self._memo, self._frozen_digest
        self._memo = {} if outer is None else outer
        try:
            yield
        finally:
            self._memo, self._frozen_digest = outer, outer_digest

    def _lookup(self, va: int) -> tuple[str, int, int, int] | None:
        table = self.root
        read = self.mem.read_u64 if self._esize == 8 else self.mem.read_u32
        esize = self._esize
        for shift, index_mask, addr_mask, large, name, last in self._walk:
            slot = table + ((va >> shift) & index_mask) * esize
            e = read(slot)
            if not e & _P:
                return None
            if last:
                return (name, slot, e, FRAME_SIZE)
            if large and e & _PS:
                return (name, slot, e, large)
            table = e & addr_mask
        return None  # pragma: no cover

    def entry_for(self, va: int) -> tuple[str, int]:
        """Where a software walk for ``va`` stops: (level name, raw entry) of the first
        non-present entry or of the leaf -- present or not, as Zephyr's ``pentry_get``
        (``arch/x86/core/x86_mmu.c``) reports it. No rights checks, no A/D updates."""
        table = self.root
        last = len(self._plan.levels) - 1
        for i, lp in enumerate(self._plan.levels):
            e = self._read(self._slot(table, i, va))
            if not e & _P or i == last or (lp.large_size and e & _PS):
                return lp.level.name, e
            table = e & lp.addr_mask
        raise AssertionError("entry_for: walk ended without a leaf")  # pragma: no cover

    def leaves(self) -> Iterator[tuple[int, int, int]]:
        """Every present leaf as (linear address, entry, page size), in address order."""
        yield from self._leaves(self.root, 0, 0)

    def _leaves(self, table: int, level: int, base: int) -> Iterator[tuple[int, int, int]]:
        lp = self._plan.levels[level]
        last = level == len(self._plan.levels) - 1
        for idx in range(lp.index_mask + 1):
            e = self._read(table + idx * self._esize)
            if not e & _P:
                continue
            va = base | (idx << lp.shift)
            if self.mode is MODE_IA32E and va >> 47:
                va |= ~((1 << 48) - 1) & ((1 << 64) - 1)  # sign-extend bit 47
            if last or (lp.large_size and e & _PS):
                yield (va, e, FRAME_SIZE if last else lp.large_size)
            else:
                yield from self._leaves(e & lp.addr_mask, level + 1, va)

    def _check(self) -> None:
        """Every present entry is free of reserved bits, every table pointer leads to a frame this
        builder allocated, and no table frame is referenced twice."""
        seen: set[int] = {self.root}
        problems: list[str] = []
        self._check_table(self.root, 0, set(self.table_frames), seen, problems)
        unreachable = set(self.table_frames) - seen
        if unreachable:
            problems.append(f"table frames not reachable from the root: {sorted(unreachable)}")
        if problems:
            raise AssertionError("PageTables._check:\n  " + "\n  ".join(problems))

    def _check_table(
        self, table: int, level: int, frames: set[int], seen: set[int], problems: list[str]
    ) -> None:
        lp = self._plan.levels[level]
        last = level == len(self._plan.levels) - 1
        for idx in range(lp.index_mask + 1):
            slot = table + idx * self._esize
            e = self._read(slot)
            if not e & _P:
                continue
            large = not last and lp.large_size and e & _PS
            rsvd = lp.leaf_rsvd if large else lp.table_rsvd
            if e & rsvd:
                problems.append(f"{lp.level.entry_name} at {slot:#x} = {e:#x} has reserved bits")
            if last or large:
                continue
            child = e & lp.addr_mask
            if child not in frames:
                problems.append(
                    f"{lp.level.entry_name} at {slot:#x} points at {child:#x}, not a table"
                )
            elif child in seen:
                problems.append(f"table {child:#x} referenced twice (again at {slot:#x})")
            else:
                seen.add(child)
                self._check_table(child, level + 1, frames, seen, problems)


__all__ = ["PageTables"]
