"""A per-CPU TLB that behaves like hardware, not like a cache that is always right (SDM 4.10).

* Filled only from a successful walk (a not-present or reserved-bit entry is never cached), with the
  combined rights (U/S, R/W, XD) and the leaf's D flag.
* A cached translation is used until it is invalidated: a PTE changed in memory is not seen until
  ``invlpg``, a CR3 write (non-global entries) or a full flush. That is what makes an SMP unmap need a
  shootdown, and what the kernel's ``SIM_TLB_SHOOTDOWN=n`` knob shows going wrong.
* Global entries (G=1 in the leaf with CR4.PGE=1) survive a CR3 write; ``invlpg`` of their page and a
  full flush remove them.
* A large page is cached as one entry of its own size; ``invlpg`` of any address inside it removes it.

Deviation, documented in docs/hw.md: the TLB has no capacity limit and never drops an entry on its
own. Hardware may drop any entry at any time; keeping every entry is the worst case for stale
translations, which is the case a stack-protection policy must survive. There are no
paging-structure caches (a changed table pointer is seen by the next walk), and no PCIDs.

Complexity: ``lookup``, ``fill`` and ``invlpg`` are O(1); ``flush_nonglobal`` is O(entries).
"""

from __future__ import annotations

import attrs

# Rights codes: what the CPU needs to decide an access from a cached entry alone.
R_USER = 1
R_WRITABLE = 2
R_NX = 4
R_DIRTY = 8

_LARGE_SHIFTS = (21, 22, 30)  # 2M (PAE, IA-32e), 4M (32-bit PSE), 1G (IA-32e)


@attrs.frozen(slots=True)
class TlbEntry:
    """One cached translation: linear page -> physical frame, with its combined rights."""

    page: int  # linear base of the page
    frame: int  # physical base of the page
    page_size: int
    rights: int  # R_USER | R_WRITABLE | R_NX | R_DIRTY
    global_: bool

    @property
    def user(self) -> bool:
        """U/S: a CPL-3 access may use it."""
        return bool(self.rights & R_USER)

    @property
    def writable(self) -> bool:
        """R/W: a write may use it (at CPL 3, or at CPL 0 with CR0.WP=1)."""
        return bool(self.rights & R_WRITABLE)

    @property
    def flags(self) -> str:
        """The rights as five letters: U/S, W/R, X or -, D or -, G or - (``UW-D-``)."""
        r = self.rights
        return "".join(
            (
                "U" if r & R_USER else "S",
                "W" if r & R_WRITABLE else "R",
                "X" if not r & R_NX else "-",
                "D" if r & R_DIRTY else "-",
                "G" if self.global_ else "-",
            )
        )

    def describe(self) -> str:
        return f"{self.page:#x} -> {self.frame:#x} ({self.page_size // 1024}K {self.flags})"


# DEVIATION(tlb-keeps-entries): a TLB keeps every entry until invlpg or a flush (hardware may
# drop any at any time); CONFIG_SIM_TLB_EVICTION lets the kernel engine drop stale ones.
class Tlb:
    """A translation lookaside buffer of one CPU."""

    __slots__ = ("_by_shift", "_pages", "hits", "misses")

    def __init__(self) -> None:
        # 4K entries by linear page number. Cpu.translate probes this dict itself (its hot path).
        self._pages: dict[int, TlbEntry] = {}
        self._by_shift: dict[int, dict[int, TlbEntry]] = {s: {} for s in _LARGE_SHIFTS}
        self.hits = 0
        self.misses = 0

    def lookup(self, va: int) -> TlbEntry | None:
        """The cached translation covering ``va``, or None. Counts hits and misses (a hit on a
        4K page found by ``Cpu.translate``'s own probe of ``_pages`` is counted there)."""
        e = self._pages.get(va >> 12)
        if e is None:
            for shift, table in self._by_shift.items():
                if table:
                    e = table.get(va >> shift)
                    if e is not None:
                        break
        if e is None:
            self.misses += 1
        else:
            self.hits += 1
        return e

    def peek(self, va: int) -> TlbEntry | None:
        """The cached 4K translation of ``va``'s page, or None: an observer's look (invariants,
        tests), not an access -- it counts neither a hit nor a miss."""
        return self._pages.get(va >> 12)

    def cached(self) -> list[TlbEntry]:
        """Every cached entry in the order it was cached, 4K pages first (no hit counting)."""
        out = list(self._pages.values())
        for table in self._by_shift.values():
            out.extend(table.values())
        return out

    def fill(self, va: int, frame: int, page_size: int, rights: int, global_: bool) -> TlbEntry:
        """Cache the translation of the page containing ``va`` (after a successful walk)."""
        shift = page_size.bit_length() - 1
        page = va & ~(page_size - 1)
        entry = TlbEntry(page, frame, page_size, rights, global_)
        if shift == 12:
            self._pages[va >> 12] = entry
        else:
            self._by_shift[shift][va >> shift] = entry
        return entry

    def invlpg(self, va: int) -> None:
        """Invalidate the entries for the page containing ``va``, global ones included."""
        self._pages.pop(va >> 12, None)
        for shift, table in self._by_shift.items():
            if table:
                table.pop(va >> shift, None)

    def flush_nonglobal(self) -> None:
        """What MOV to CR3 does (CR4.PCIDE=0): drop every non-global entry."""
        self._pages = {k: e for k, e in self._pages.items() if e.global_}
        for shift, table in self._by_shift.items():
            self._by_shift[shift] = {k: e for k, e in table.items() if e.global_}

    def flush_all(self) -> None:
        """Drop everything, global entries included (e.g. toggling CR4.PGE)."""
        self._pages.clear()
        for table in self._by_shift.values():
            table.clear()

    def entries(self) -> list[TlbEntry]:
        """Every cached entry, sorted by linear address."""
        return sorted(self.cached(), key=lambda e: e.page)

    def __len__(self) -> int:
        return len(self._pages) + sum(len(t) for t in self._by_shift.values())

    def _check(self) -> None:
        """Every entry sits under the key of its own page, aligned to its size."""
        try:
            for vpn, e in self._pages.items():
                assert e.page_size == 4096 and e.page == vpn << 12, e
                assert e.frame & 0xFFF == 0, e
            for shift, table in self._by_shift.items():
                for key, e in table.items():
                    assert e.page_size == 1 << shift and e.page == key << shift, e
                    assert e.frame & (e.page_size - 1) == 0, e
        except AssertionError:
            print("Tlb._check failed; entries:")
            for e in self.entries():
                print("   ", e.describe())
            raise
