"""Address-space areas of a user process: reserve, commit, protect, unmap; grows-down areas with a
guard gap and a limit; demand faults. docs/runtime.md describes it for users.

An ``AddressSpace`` keeps its ``Area`` s in a ``SortedKeyList`` keyed by start. It writes page
tables only through a ``Pager`` (``mmusim.runtime.pager``), so it runs on bare ``mmusim.hw`` page
tables as well as in the kernel. What differs between Linux, nanos and Haiku is data, an
``MmFlavour`` (``mmusim.runtime.defs``); the rules follow, with where they were read:

* Linux ``mm/mmap.c`` / ``mm/vma.c`` ``expand_downwards``: page-align the address; the gap rule
  ``prev && !(prev->vm_flags & VM_GROWSDOWN) && vma_is_accessible(prev) && address - prev->vm_end
  < stack_guard_gap`` -> -ENOMEM; then ``acct_stack_growth``: ``actual_size = size - PAGE_SIZE``
  for a growsdown VMA, -ENOMEM if above ``rlim[RLIMIT_STACK].rlim_cur``. Growth is in one step to
  the faulting page; the page is then demand-faulted. A refused growth is ``bad_area`` ->
  SIGSEGV ``SEGV_MAPERR`` (``arch/x86/mm/fault.c`` ``do_user_addr_fault``).
* Linux ``include/linux/mm.h`` ``vm_start_gap``: placement keeps ``stack_guard_gap`` free below
  a growsdown VMA; ``MAP_FIXED`` does not.
* Linux ``split_vma``: -ENOMEM when ``mm->map_count >= sysctl_max_map_count``; ``do_mmap``:
  -ENOMEM when ``mm->map_count > sysctl_max_map_count`` (so a plain mmap may reach the ceiling
  plus one); munmap checks only a cut in the middle of one VMA (``vms_gather_munmap_vmas``).
* Linux 6.13 ``MADV_GUARD_INSTALL``: a per-page marker; the range is zapped, no VMA is split,
  ``map_count`` is unchanged; a fault on a marker is ``VM_FAULT_SIGSEGV`` (``mm/memory.c``
  ``handle_pte_marker``) -> ``SEGV_MAPERR``. Access rights are checked first (``access_error``).
* nanos ``src/unix/mmap.c`` ``vmap_from_vaddr``: a stack vmap not covering ``vaddr`` may grow only
  if ``vm->node.r.end <= vaddr + p->rlimit_stack`` (``vaddr`` not yet aligned), then with ``vaddr``
  aligned only if there is no prev or ``prev->node.r.end <= vaddr - PROCESS_STACK_GUARD_GAP``.
  No exemptions; the subtraction is unsigned (a ``vaddr`` below the gap wraps and passes).
* Haiku ``src/system/kernel/vm/vm.cpp``: ``mprotect`` of part of an area sets per-page
  protections (``page_protections``) and does not split; ``munmap`` of the middle splits
  (``cut_area``); a ``B_STACK_AREA`` refuses faults in its first ``guardSize`` bytes
  (``VMAnonymousCache::Fault`` -> ``B_BAD_ADDRESS`` -> ``SEGV_MAPERR``); no growth.

Access rules (x86 ``access_error``) are in ``mmusim.runtime.area``.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator

import attrs
from sortedcontainers import SortedKeyList, SortedSet

from mmusim.runtime.area import Area, _pages, allows, rights
from mmusim.runtime.defs import (
    LINUX,
    MASK64,
    PAGE,
    PAGE_MASK,
    SEGV_ACCERR,
    SEGV_MAPERR,
    SIGSEGV,
    FaultOutcome,
    MapFlag,
    MmFlavour,
    Prot,
    refuse,
)
from mmusim.runtime.pager import Pager, PteRights


class AddressSpace:
    """The user address space ``[lo, hi)`` of one process, as ``flavour`` runs it.

    ``rlimit_stack``: RLIMIT_STACK's soft limit (default: the flavour's). ``check=True`` runs
    ``_check()`` after every operation (tests).
    """

    def __init__(
        self,
        pager: Pager,
        lo: int,
        hi: int,
        *,
        flavour: MmFlavour = LINUX,
        rlimit_stack: int | None = None,
        check: bool = False,
    ) -> None:
        if lo & PAGE_MASK or hi & PAGE_MASK or not 0 <= lo < hi:
            raise ValueError(f"AddressSpace: bad bounds {lo:#x}..{hi:#x}")
        self.pager = pager
        self.lo = lo
        self.hi = hi
        self.flavour = flavour
        self.rlimit_stack = flavour.rlimit_stack if rlimit_stack is None else rlimit_stack
        self.check = check
        self.areas: SortedKeyList = SortedKeyList(key=operator.attrgetter("start"))
        self._serial = 0
        # What a runtime built on the space keeps with it, by name (Go's heap: "go-heap"), so
        # that it lives and dies with the space.
        self.extensions: dict[str, object] = {}

    # -- lookup -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Area]:
        return iter(self.areas)

    def __len__(self) -> int:
        return len(self.areas)

    def _find_vma(self, addr: int) -> int:
        """Index of the first area ending above ``addr`` (Linux ``find_vma``); may be len()."""
        i: int = self.areas.bisect_key_right(addr) - 1
        return i if i >= 0 and self.areas[i].end > addr else i + 1

    def find(self, addr: int) -> Area | None:
        """The area containing ``addr``, or None."""
        i = self._find_vma(addr)
        if i < len(self.areas) and self.areas[i].start <= addr:
            return self.areas[i]  # type: ignore[no-any-return]
        return None

    def _prev(self, area: Area) -> Area | None:
        i = self.areas.index(area)
        return self.areas[i - 1] if i else None

    def _next(self, area: Area) -> Area | None:
        i = self.areas.index(area) + 1
        return self.areas[i] if i < len(self.areas) else None

    def _overlapping(self, start: int, end: int) -> list[Area]:
        i = self._find_vma(start)
        return list(self.areas.islice(i, self.areas.bisect_key_left(end)))

    def vm_start_gap(self, area: Area) -> int:
        """Linux ``vm_start_gap``: where the free space below ``area`` must end."""
        if not area.growsdown:
            return area.start
        return max(area.start - self.flavour.stack_guard_gap, 0)

    def maps(self) -> str:
        """One line per area, like /proc/self/maps (plus committed pages)."""
        return "\n".join(f"{a.describe()} [{len(a.committed)}/{a.pages}]" for a in self.areas)

    # -- argument checks --------------------------------------------------------------------

    def _range(self, call: str, addr: int, length: int, outside: str) -> int:
        """The page-aligned end of ``[addr, addr + length)``, or EINVAL / ``outside``."""
        if addr & PAGE_MASK:
            raise refuse(call, "EINVAL", f"address {addr:#x} is not page-aligned")
        if length <= 0:
            raise refuse(call, "EINVAL", "length is zero or negative")
        end = addr + ((length + PAGE_MASK) & ~PAGE_MASK)
        if addr < self.lo or end > self.hi:
            raise refuse(
                call, outside, f"range outside the address space {self.lo:#x}-{self.hi:#x}"
            )
        return end

    def _covered(self, call: str, start: int, end: int) -> list[Area]:
        areas = self._overlapping(start, end)
        at = start
        for a in areas:
            if a.start > at:
                break
            at = a.end
        if at < end:
            raise refuse(call, "ENOMEM", f"{max(at, start):#x} in the range is not mapped")
        return areas

    def _done(self) -> None:
        self.pager.flush_tlb()
        if self.check:
            self._check()

    # -- area surgery -----------------------------------------------------------------------

    def _new_serial(self) -> int:
        self._serial += 1
        return self._serial

    def _split_vma(
        self, call: str, area: Area, at: int, *, count: bool = True
    ) -> tuple[Area, Area]:
        """Linux ``split_vma``: ENOMEM at the ``vm.max_map_count`` ceiling (if ``count``)."""
        ceiling = self.flavour.max_map_count
        if count and ceiling is not None and len(self.areas) >= ceiling:
            raise refuse(call, "ENOMEM", f"vm.max_map_count ({ceiling}) reached")
        lo, hi = area.split(at)
        self.areas.remove(area)
        self.areas.update((lo, hi))
        return lo, hi

    def _merge(self, area: Area) -> Area:
        """Linux ``vma_merge``: join ``area`` with compatible adjacent neighbours."""
        if not self.flavour.merge:
            return area
        for lower_is_prev in (True, False):
            other = self._prev(area) if lower_is_prev else self._next(area)
            if other is None:
                continue
            lo, hi = (other, area) if lower_is_prev else (area, other)
            if not lo.mergeable(hi):
                continue
            joined = attrs.evolve(
                lo,
                end=hi.end,
                committed=SortedSet([*lo.committed, *hi.committed]),
                guards=SortedSet([*lo.guards, *hi.guards]),
                fixed=lo.fixed or hi.fixed,
                serial=min(lo.serial, hi.serial),
            )
            self.areas.remove(lo)
            self.areas.remove(hi)
            self.areas.add(joined)
            area = joined
        return area

    def _zap(self, area: Area, start: int, end: int) -> None:
        """Free the frames and PTEs of ``area``'s committed pages in ``[start, end)``."""
        for page in list(area.committed.irange(start, end, inclusive=(True, False))):
            self.pager.unmap_page(page)
            area.committed.remove(page)

    def _commit(self, area: Area, page: int) -> None:
        r = rights(area.prot_at(page))
        if r is None:
            self.pager.map_page(page, False, False, False)
        else:
            self.pager.map_page(page, r.writable, r.user, r.exec)
        area.committed.add(page)

    def _reprotect(self, area: Area, start: int, end: int, old: dict[int, Prot]) -> None:
        """Rewrite the PTEs of committed pages whose protection changed from ``old``."""
        for page in area.committed.irange(start, end, inclusive=(True, False)):
            if area.prot_at(page) != old[page]:
                r = rights(area.prot_at(page)) or PteRights(False, False, False)
                self.pager.protect_page(page, r.writable, r.user, r.exec)

    # -- mmap / munmap ----------------------------------------------------------------------

    def mmap(
        self,
        length: int,
        prot: Prot,
        flags: MapFlag = MapFlag.PRIVATE | MapFlag.ANONYMOUS,
        addr: int | None = None,
        name: str = "",
        *,
        guard_size: int = 0,
    ) -> int:
        """Reserve ``length`` bytes (rounded up to pages); returns the start. Nothing is committed:
        pages get a frame when touched (``fault``) or by ``populate``. ``guard_size``: a Haiku
        ``B_STACK_AREA`` guard at the bottom of the area (Haiku flavour only)."""
        call = f"mmap({addr or 0:#x}, {length}, {_names(prot, 'PROT')}, {_names(flags, 'MAP')})"
        prot, flags = Prot(prot), MapFlag(flags)
        if length <= 0 or length > self.hi - self.lo:
            raise refuse(call, "EINVAL" if length <= 0 else "ENOMEM", "bad length")
        length = (length + PAGE_MASK) & ~PAGE_MASK
        growsdown = bool(flags & MapFlag.GROWSDOWN)
        if growsdown and (flags & MapFlag.SHARED or not self.flavour.growsdown):
            raise refuse(call, "EINVAL", f"MAP_GROWSDOWN not allowed here ({self.flavour.name})")
        if guard_size and not self.flavour.stack_area_guard:
            raise refuse(call, "EINVAL", f"no stack-area guards in {self.flavour.name}")
        if guard_size & PAGE_MASK or not 0 <= guard_size <= length:
            raise refuse(call, "EINVAL", f"guard size {guard_size:#x}")
        ceiling = self.flavour.max_map_count
        if ceiling is not None and len(self.areas) > ceiling:
            raise refuse(call, "ENOMEM", f"vm.max_map_count ({ceiling}) exceeded")
        fixed = bool(flags & MapFlag.FIXED)
        if fixed:
            if addr is None:
                raise refuse(call, "EINVAL", "MAP_FIXED without an address")
            end = self._range(call, addr, length, "ENOMEM")
            self._unmap(call, addr, end)
            start = addr
        else:
            start = self._place(call, length, addr)
        area = Area(
            start,
            start + length,
            prot,
            name,
            growsdown=growsdown,
            noreserve=bool(flags & MapFlag.NORESERVE),
            guard_size=guard_size,
            fixed=fixed,
            serial=self._new_serial(),
        )
        area.moved = area.serial
        self.areas.add(area)
        self._merge(area)
        self._done()
        return start

    def _fits(self, start: int, end: int) -> bool:
        """Is ``[start, end)`` free, and clear of every growsdown area's gap?"""
        if start < self.lo or end > self.hi:
            return False
        i = self._find_vma(start)
        return i == len(self.areas) or self.vm_start_gap(self.areas[i]) >= end

    def _place(self, call: str, length: int, hint: int | None) -> int:
        """Top-down first fit below ``hi``, honouring ``vm_start_gap`` (Linux
        ``unmapped_area_topdown``; nanos ``proc_virt_node_handler``); a free hint is taken."""
        if hint is not None and not hint & PAGE_MASK and self._fits(hint, hint + length):
            return hint
        limit = self.hi
        for area in reversed(self.areas):
            if limit - area.end >= length:
                return limit - length
            limit = min(limit, self.vm_start_gap(area))
        if limit - self.lo >= length:
            return limit - length
        raise refuse(call, "ENOMEM", f"no free range of {length} bytes")

    def munmap(self, addr: int, length: int) -> None:
        """Remove ``[addr, addr + length)``: frames freed, PTEs cleared, TLBs invalidated; an area
        cut in the middle splits (Linux ``do_vmi_munmap``, Haiku ``cut_area``)."""
        call = f"munmap({addr:#x}, {length})"
        end = self._range(call, addr, length, "EINVAL")
        self._unmap(call, addr, end)
        self._done()

    def _unmap(self, call: str, start: int, end: int) -> None:
        areas = self._overlapping(start, end)
        ceiling = self.flavour.max_map_count
        middle = [a for a in areas if a.start < start and end < a.end]
        if middle and ceiling is not None and len(self.areas) >= ceiling:
            raise refuse(call, "ENOMEM", f"vm.max_map_count ({ceiling}) reached")
        for area in areas:
            self._zap(area, start, end)
            if area.start < start:
                _, area = self._split_vma(call, area, start, count=False)
            if end < area.end:
                area, _ = self._split_vma(call, area, end, count=False)
            self.areas.remove(area)

    # -- mprotect ---------------------------------------------------------------------------

    def mprotect(self, addr: int, length: int, prot: Prot) -> None:
        """Change the protection of ``[addr, addr + length)``, which must be mapped (ENOMEM).
        Linux and nanos split areas at the range ends (ENOMEM at the ``max_map_count`` ceiling,
        the splits already made staying made, as in Linux); Haiku sets per-page protections."""
        call = f"mprotect({addr:#x}, {length}, {_names(prot, 'PROT')})"
        prot = Prot(prot)
        end = self._range(call, addr, length, "ENOMEM")
        areas = self._covered(call, addr, end)
        if not self.flavour.split_on_mprotect:
            for area in areas:
                self._protect_pages(area, max(addr, area.start), min(end, area.end), prot)
            self._done()
            return
        at = addr
        while at < end:
            found = self.find(at)
            assert found is not None
            area = found
            if area.prot == prot:
                at = area.end
                continue
            if area.start < at:  # no split if the piece joins next (vma_merge moves a boundary)
                nxt = self._next(area)
                absorbed = (
                    nxt is not None
                    and end >= area.end
                    and attrs.evolve(area, prot=prot).mergeable(nxt)
                )
                _, area = self._split_vma(
                    call, area, at, count=not (absorbed and self.flavour.merge)
                )
            if end < area.end:
                prv = self._prev(area)
                absorbed = prv is not None and prv.mergeable(attrs.evolve(area, prot=prot))
                area, _ = self._split_vma(
                    call, area, end, count=not (absorbed and self.flavour.merge)
                )
            self._protect_pages(area, area.start, area.end, prot)
            at = area.end
            self._merge(area)
        self._done()

    def _protect_pages(self, area: Area, start: int, end: int, prot: Prot) -> None:
        old = {
            p: area.prot_at(p) for p in area.committed.irange(start, end, inclusive=(True, False))
        }
        if start == area.start and end == area.end:
            area.prot = prot
            area.page_prot.clear()
        else:
            area.page_prot.update(dict.fromkeys(_pages(start, end), prot))
        self._reprotect(area, start, end, old)

    # -- guard markers (Linux 6.13 MADV_GUARD_INSTALL / MADV_GUARD_REMOVE) -------------------

    def madvise_guard_install(self, addr: int, length: int) -> None:
        """Put a guard marker on each page: its frame and PTE go, no area splits, ``map_count``
        stays; a later access is SIGSEGV ``SEGV_MAPERR``."""
        call = f"madvise({addr:#x}, {length}, MADV_GUARD_INSTALL)"
        if not self.flavour.guard_markers:
            raise refuse(call, "EINVAL", f"no MADV_GUARD_INSTALL in {self.flavour.name}")
        end = self._range(call, addr, length, "ENOMEM")
        for area in self._covered(call, addr, end):
            lo, hi = max(addr, area.start), min(end, area.end)
            self._zap(area, lo, hi)
            area.guards.update(_pages(lo, hi))
        self._done()

    def madvise_guard_remove(self, addr: int, length: int) -> None:
        """Remove the guard markers: the pages are zero-fill-on-demand again."""
        call = f"madvise({addr:#x}, {length}, MADV_GUARD_REMOVE)"
        if not self.flavour.guard_markers:
            raise refuse(call, "EINVAL", f"no MADV_GUARD_REMOVE in {self.flavour.name}")
        end = self._range(call, addr, length, "ENOMEM")
        for area in self._covered(call, addr, end):
            for page in list(area.guards.irange(addr, end, inclusive=(True, False))):
                area.guards.remove(page)
        self._done()

    # -- commit -----------------------------------------------------------------------------

    def populate(self, addr: int, length: int) -> int:
        """Commit every page of the range now (as ``MADV_POPULATE_WRITE`` would); returns how
        many pages were committed. EFAULT, before anything is committed, if a page is guarded
        or inaccessible."""
        call = f"populate({addr:#x}, {length})"
        end = self._range(call, addr, length, "ENOMEM")
        todo = []
        for area in self._covered(call, addr, end):
            for page in _pages(max(addr, area.start), min(end, area.end)):
                if page in area.guards or area.in_guard(page) or area.prot_at(page) == Prot.NONE:
                    raise refuse(call, "EFAULT", f"page {page:#x} is a guard or inaccessible")
                if page not in area.committed:
                    todo.append((area, page))
        for area, page in todo:
            self._commit(area, page)
        self._done()
        return len(todo)

    def fault(self, addr: int, write: bool, exec: bool = False) -> FaultOutcome:
        """What a user page fault at ``addr`` does: commit the page, grow a growsdown area down to
        it and commit it, or refuse with SIGSEGV (``SEGV_MAPERR`` / ``SEGV_ACCERR``)."""
        page = addr & ~PAGE_MASK
        grown = 0
        if not self.lo <= addr < self.hi:
            return _segv(addr, SEGV_MAPERR, "outside the user address space")
        i = self._find_vma(addr)
        area: Area | None = self.areas[i] if i < len(self.areas) else None
        if area is None:
            return _segv(addr, SEGV_MAPERR, "no area at or above the address")
        if area.start > addr:
            if not area.growsdown:
                return _segv(addr, SEGV_MAPERR, "no area at the address")
            prev = self.areas[i - 1] if i else None
            refused = self._grow_refusal(area, prev, addr)
            if refused:
                return _segv(addr, SEGV_MAPERR, refused)
            grown = (area.start - page) // PAGE
            self.areas.remove(area)  # its key changes: out, move, back in
            area.start = page
            area.moved = self._new_serial()
            self.areas.add(area)
        prot = area.prot_at(page)
        if not allows(prot, write, exec):
            what = "write" if write else "fetch" if exec else "read"
            self._done()
            return _segv(
                addr, SEGV_ACCERR, f"{what} not allowed by {prot.letters()} of {area.label}"
            )
        if page in area.guards:
            self._done()
            return _segv(addr, SEGV_MAPERR, f"guard marker (MADV_GUARD_INSTALL) in {area.label}")
        if area.in_guard(page):
            self._done()
            return _segv(addr, SEGV_MAPERR, f"in the B_STACK_AREA guard of {area.label}")
        if page in area.committed:
            self._done()
            return FaultOutcome("present", addr, "page already mapped: retry")
        self._commit(area, page)
        self._done()
        if grown:
            return FaultOutcome("grow", addr, f"{area.label} grew {grown} pages", grown_pages=grown)
        return FaultOutcome("commit", addr, f"page committed in {area.label}")

    def _grow_refusal(self, area: Area, prev: Area | None, addr: int) -> str | None:
        """Why growing ``area`` down to ``addr`` is refused, or None (growth allowed)."""
        if self.flavour.rlimit_rule == "nanos":
            return self._vmap_from_vaddr(area, prev, addr)
        return self._expand_downwards(area, prev, addr)

    def _gap_words(self, area: Area) -> str:
        return f"in the stack guard gap of {self.flavour.stack_guard_gap // PAGE} pages below {area.label}"

    def _expand_downwards(self, area: Area, prev: Area | None, addr: int) -> str | None:
        """Linux ``expand_downwards`` + ``acct_stack_growth`` (see the module docstring)."""
        address = addr & ~PAGE_MASK
        f = self.flavour
        if prev is not None:
            exempt = (f.gap_exempt_growsdown_prev and prev.growsdown) or (
                f.gap_exempt_inaccessible_prev and not prev.accessible()
            )
            if not exempt and address - prev.end < f.stack_guard_gap:
                return self._gap_words(area) + f" ({prev.label} ends at {prev.end:#x})"
        return self._acct_stack_growth(area, area.end - address)

    def _acct_stack_growth(self, area: Area, size: int) -> str | None:
        """Linux ``acct_stack_growth``, its "Stack limit test": a growsdown VMA's size counts one
        page less against RLIMIT_STACK. (``may_expand_vm``, mlock and overcommit: not modelled.)"""
        actual_size = size - PAGE
        if actual_size > self.rlimit_stack:
            return f"beyond RLIMIT_STACK ({self.rlimit_stack} bytes) of {area.label}"
        return None

    def _vmap_from_vaddr(self, area: Area, prev: Area | None, vaddr: int) -> str | None:
        """nanos ``vmap_from_vaddr``: the rlimit test on the unaligned address, the gap test on
        the aligned one, in unsigned 64-bit arithmetic, no exemptions."""
        if area.end > vaddr + self.rlimit_stack:
            return f"beyond RLIMIT_STACK ({self.rlimit_stack} bytes) of {area.label}"
        vaddr &= ~PAGE_MASK
        if prev is None or prev.end <= (vaddr - self.flavour.stack_guard_gap) & MASK64:
            return None
        return self._gap_words(area) + f" ({prev.label} ends at {prev.end:#x})"

    # -- costs ------------------------------------------------------------------------------

    def costs(self) -> dict[str, int]:
        """What the address space holds and what it has cost so far, as plain numbers:
        ``areas``, ``virtual_pages``, ``committed_pages``, ``guard_markers``, and from the pager
        ``frames``, ``table_pages``, ``pte_writes``, ``shootdowns`` (the last two cumulative).
        Subtract two snapshots with ``costs_delta``."""
        return {
            "areas": len(self.areas),
            "virtual_pages": sum(a.pages for a in self.areas),
            "committed_pages": sum(len(a.committed) for a in self.areas),
            "guard_markers": sum(len(a.guards) for a in self.areas),
            "frames": self.pager.frames,
            "table_pages": self.pager.table_pages,
            "pte_writes": self.pager.pte_writes,
            "shootdowns": self.pager.shootdowns,
        }

    # -- invariants -------------------------------------------------------------------------

    def _check(self, deep: bool = True) -> None:
        """Areas sorted, disjoint, inside ``[lo, hi)``, each well formed; every committed page
        holds a frame and is mapped with the rights its protection gives (PROT_NONE: not
        present); the pager holds no other frame; with ``deep``, every other page is not
        present; the gap below a growsdown area holds no area that arrived after the area last
        moved (MAP_FIXED ones, growsdown ones and those from before aside); ``map_count`` at most
        the ceiling plus one (``do_mmap`` checks ``>``)."""
        areas = list(self.areas)
        prev: Area | None = None
        committed = 0
        for area in areas:
            area._check()
            assert self.lo <= area.start and area.end <= self.hi, f"outside: {area.describe()}"
            if prev is not None:
                assert prev.end <= area.start, f"overlap: {prev.describe()} / {area.describe()}"
            for page in area.committed:
                assert self.pager.resident(page), f"committed {page:#x} holds no frame"
                want = rights(area.prot_at(page))
                if want is not None and not self.pager.nx:
                    want = attrs.evolve(want, exec=True)  # no XD bit: every page executes
                assert self.pager.lookup(page) == want, (
                    f"PTE of {page:#x}: {self.pager.lookup(page)} for {area.prot_at(page)!r}"
                )
            if deep:
                for page in _pages(area.start, area.end):
                    if page not in area.committed:
                        assert self.pager.lookup(page) is None, f"{page:#x} present, not committed"
            committed += len(area.committed)
            prev = area
        assert self.pager.frames == committed, (
            f"pager holds {self.pager.frames} frames, {committed}"
        )
        for i, area in enumerate(areas):
            if not area.growsdown:
                continue
            for other in reversed(areas[:i]):
                if other.end <= self.vm_start_gap(area):
                    break
                allowed = other.fixed or area.fixed or other.growsdown or other.serial < area.moved
                assert allowed, f"{other.describe()} in the gap below {area.describe()}"
        ceiling = self.flavour.max_map_count
        assert ceiling is None or len(areas) <= ceiling + 1, f"map_count {len(areas)}"


def costs_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """``after - before``, key by key: what happened between two ``costs()`` snapshots."""
    return {k: after[k] - before[k] for k in after}


def _segv(addr: int, code: int, reason: str) -> FaultOutcome:
    return FaultOutcome("signal", addr, reason, signal=SIGSEGV, si_code=code)


def _names(value: int, prefix: str) -> str:
    """``PROT_READ|PROT_WRITE`` for a Prot, ``MAP_PRIVATE|MAP_ANONYMOUS`` for flags."""
    cls = Prot if prefix == "PROT" else MapFlag
    parts = [f"{prefix}_{m.name}" for m in cls if m.value and value & m.value and m.name]
    rest = value & ~sum(m.value for m in cls)
    if rest:
        parts.append(hex(rest))
    return "|".join(parts) or f"{prefix}_NONE"


__all__ = ["AddressSpace", "Area", "allows", "costs_delta", "rights"]
