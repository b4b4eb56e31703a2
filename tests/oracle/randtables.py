"""Random x86 page tables as raw bytes, for differential tests against the Unicorn oracle.

Everything here is written from the entry formats of the SDM (Intel SDM Vol. 3A §4.3-§4.5), not
with mmusim's builder, so that a bug shared by the builder and the walker cannot hide. All
randomness comes from one ``random.Random(seed)``: a (seed, mode) pair always gives the same image
and the same access list.

What a case holds:

* a physical image of 256 KiB, 512 KiB or 1 MiB whose page tables form a tree (no table is
  shared), with random P, R/W, U/S, PWT, PCD, A, D, G, PS, PAT, XD and ignored bits; large pages
  (4M with PSE in 32-bit paging, 2M in PAE, 2M and 1G in IA-32e); a reserved bit in about 3% of
  the present entries; garbage in many not-present entries; leaf frames anywhere in the image
  (table frames included) and, rarely, outside it;
* a CR3 (with random PWT/PCD bits, which do not move the root);
* a list of accesses: linear addresses drawn from a pool of interesting ones (mostly under a
  present leaf, some under not-present or reserved entries, a few unpopulated, and in IA-32e a
  few non-canonical), each with random controls: CPL 0/3, read/write/execute, CR0.WP,
  EFER.NXE, CR4.SMEP/SMAP, EFLAGS.AC, and CR4.PSE in 32-bit paging.

The oracle's reserved slot (``UnicornOracle.reserved_slot``) is never populated and its VA range
never accessed: PML4[511] in IA-32e, PD[511] under PDPTE[3] in PAE, PD[1023] in 32-bit paging.

The cases avoid the known deviations between Unicorn and hardware, listed by name in
``EXCLUDED_DEVIATIONS``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "EXCLUDED_DEVIATIONS",
    "HAND_DATA",
    "HAND_PT",
    "HAND_VA",
    "MAXPHYADDR",
    "MODES",
    "AccessSpec",
    "RandomCase",
    "RawImage",
    "generate",
    "hand_image",
    "hand_upper",
    "raw_path",
]

#: Known differences between Unicorn 2.1.4 and the architecture that the generated cases (and
#: the comparison in tests/test_differential.py) stay clear of. Each name is used where it applies.
EXCLUDED_DEVIATIONS: dict[str, str] = {
    "pae-pdpte-reserved": (
        "No reserved bits (2:1, 8:5, 63:40) in a present PAE PDPTE. Hardware checks them when "
        "the PDPTE registers are loaded at MOV to CR3 and raises #GP(0) there; Unicorn re-reads "
        "PDPTEs on every walk, ignores bits 2:1 and 8:5, and turns 63:40 into a #PF with RSVD "
        "(Intel SDM Vol. 3A §4.4.1; unicorn_oracle pitfall 5). There is no instruction-level "
        "outcome to compare."
    ),
    "unicorn-1g-leaf-a": (
        "The A bit of a 1G leaf (IA-32e PDPTE with PS=1) is not compared after an access that "
        "faults. QEMU sets it while walking, before the rights and low-frame-bit checks, whereas "
        "mmusim (like every other leaf in both) sets a leaf's A only on success; the SDM leaves "
        "a leaf's A on a faulting access model-specific (Intel SDM Vol. 3A §4.8). The test then "
        "copies mmusim's value into Unicorn so that the two memories stay comparable."
    ),
    "tlb-and-global": (
        "No TLB state is carried between accesses: the oracle flushes Unicorn's softmmu TLB "
        "before each access and mmusim's bare walker has no TLB. Unicorn's TLB is not "
        "architectural (every CR3 write flushes it, G is ignored, large pages are cached as 4K "
        "pieces; unicorn_oracle pitfall 3), so G bits are generated but have no observable "
        "effect, and CR4.PGE stays 0."
    ),
    "maxphyaddr-40": (
        "Only MAXPHYADDR = 40. Unicorn checks reserved bits as if M = 40 for every CPU model "
        "(unicorn_oracle pitfall 4), so cases for any other M have no oracle."
    ),
    "implicit-supervisor": (
        "Only explicit accesses (one mov/jmp at CPL 0 or 3). Implicit supervisor-mode accesses "
        "(GDT/IDT/TSS reads) are not modelled by mmusim's translate(); the oracle makes them "
        "only while booting its own harness, never to test memory."
    ),
}

MODES = ("32", "pae", "ia32e")
MAXPHYADDR = 40
PAGE = 0x1000

_P, _RW, _US, _PWT, _PCD, _A, _D, _PS, _G = (1 << b for b in (0, 1, 2, 3, 4, 5, 6, 7, 8))
_XD = 1 << 63
_PAT_LARGE = 1 << 12
_HARNESS_PHYS = 0xC000_0000  # the oracle's frames: large leaves never point there

_IMAGE_SIZES = (256 * 1024, 512 * 1024, 1024 * 1024)


def _bits(hi: int, lo: int) -> list[int]:
    return [1 << b for b in range(lo, hi + 1)]


@dataclass(frozen=True)
class AccessSpec:
    """One access and the control settings it runs under."""

    vaddr: int
    access: str  # "r", "w" or "x"
    cpl: int
    wp: bool
    nxe: bool
    smep: bool
    smap: bool
    ac: bool
    pse: bool

    def controls(self) -> dict[str, bool]:
        return {
            "wp": self.wp,
            "nxe": self.nxe,
            "smep": self.smep,
            "smap": self.smap,
            "ac": self.ac,
            "pse": self.pse,
        }

    def describe(self) -> str:
        flags = " ".join(f"{k}={int(v)}" for k, v in self.controls().items())
        return f"{self.access} {self.vaddr:#x} cpl={self.cpl} {flags}"


@dataclass(frozen=True)
class RandomCase:
    """A random image with its tables, its CR3 and the accesses to make on it."""

    seed: int
    mode: str
    phys_size: int
    image: bytes
    cr3: int
    table_frames: tuple[int, ...]  # physical base of every frame that holds page-table entries
    accesses: tuple[AccessSpec, ...]


@dataclass(frozen=True)
class _Target:
    """A region of linear space whose walk ends at one generated entry."""

    va: int
    span: int  # bytes of linear space under the entry
    kind: str  # "leaf", "np" (not present) or "rsvd" (reserved bit set)
    pa: int  # leaves: physical base of the page


@dataclass(frozen=True)
class _LevelShape:
    name: str
    shift: int
    entries: int
    large: int  # page size a PS=1 entry maps here, 0 if none
    populate: tuple[int, int]  # how many entries to write (min, max)


_SHAPES: dict[str, tuple[_LevelShape, ...]] = {
    "ia32e": (
        _LevelShape("PML4", 39, 512, 0, (2, 4)),
        _LevelShape("PDPT", 30, 512, 1 << 30, (2, 4)),
        _LevelShape("PD", 21, 512, 1 << 21, (2, 5)),
        _LevelShape("PT", 12, 512, 0, (6, 40)),
    ),
    "pae": (
        _LevelShape("PDPT", 30, 4, 0, (4, 4)),
        _LevelShape("PD", 21, 512, 1 << 21, (3, 6)),
        _LevelShape("PT", 12, 512, 0, (6, 40)),
    ),
    "32": (
        _LevelShape("PD", 22, 1024, 1 << 22, (4, 8)),
        _LevelShape("PT", 12, 1024, 0, (6, 40)),
    ),
}


class _Generator:
    """Builds one case. Every random choice goes through ``self.r``."""

    def __init__(self, seed: int, mode: str, phys_size: int | None) -> None:
        if mode not in MODES:
            raise ValueError(f"generate: mode {mode!r} not in {MODES}")
        self.r = random.Random(f"{mode}:{seed}")
        self.mode = mode
        self.esize = 4 if mode == "32" else 8
        self.phys_size = phys_size or self.r.choice(_IMAGE_SIZES)
        self.nframes = self.phys_size // PAGE
        self.img = bytearray(self.phys_size)
        self.shapes = _SHAPES[mode]
        # Tables never use frames 0 and 1: in 32-bit paging with CR4.PSE=0, a 4M PDE at frame 0
        # is read as a pointer to frame 0 or 1 (PAT in bit 12); those frames hold entry-like data.
        pool = list(range(2, self.nframes))
        self.r.shuffle(pool)
        self.free = pool
        self.table_budget = min(48, self.nframes // 4)
        self.tables: list[int] = []
        self.targets: list[_Target] = []

    # -- entries -------------------------------------------------------------------------------

    def put(self, addr: int, value: int) -> None:
        self.img[addr : addr + self.esize] = value.to_bytes(self.esize, "little")

    def alloc_table(self) -> int | None:
        if len(self.tables) >= self.table_budget or not self.free:
            return None
        frame = self.free.pop() * PAGE
        self.tables.append(frame)
        return frame

    def noise(self, *, pointer: bool = False) -> int:
        """Random flags and ignored bits, never P, PS or a reserved bit.

        Table pointers are more often permissive, so that the leaf's own bits decide often
        enough (R/W and U/S are ANDed, XD ORed over up to four levels).
        """
        r = self.r
        v = 0
        if r.random() < (0.85 if pointer else 0.6):
            v |= _RW
        if r.random() < (0.85 if pointer else 0.65):
            v |= _US
        for bit, p in ((_PWT, 0.2), (_PCD, 0.2), (_A, 0.35)):
            if r.random() < p:
                v |= bit
        if r.random() < 0.35:
            v |= _D  # D in a leaf; ignored in a table pointer
        if r.random() < 0.2:
            v |= _G  # G in a leaf; ignored in a table pointer
        if r.random() < 0.3:
            v |= r.getrandbits(3) << 9  # 11:9 ignored everywhere
        if self.mode != "32" and r.random() < (0.08 if pointer else 0.2):
            v |= _XD  # XD; reserved when NXE=0
        if self.mode == "ia32e" and r.random() < 0.2:
            v |= r.getrandbits(11) << 52  # 62:52 ignored in IA-32e (62:59 PK, CR4.PKE=0)
        return v

    def reserved_bits(self, level: _LevelShape, *, large: bool) -> list[int]:
        """The reserved bits of a present entry at this level (M = 40), excluding XD."""
        if self.mode == "32":
            return [1 << 21] if large else []  # 4M PDE with PSE=1; nothing else is reserved
        high = _bits(51, 40) if self.mode == "ia32e" else _bits(62, 40)
        if large:
            return high + _bits((level.large.bit_length() - 2), 13)
        if self.mode == "ia32e" and level.name == "PML4":
            return [*high, _PS]
        return high

    def maybe_reserved(
        self, value: int, level: _LevelShape, *, large: bool, rate: float = 0.03
    ) -> tuple[int, bool]:
        """Rarely set one reserved bit (table pointers more rarely: many walks pass them)."""
        choices = self.reserved_bits(level, large=large)
        if choices and self.r.random() < rate:
            return value | self.r.choice(choices), True
        return value, False

    def not_present(self) -> int:
        """P=0; everything else is software's (a swap entry, say), so often garbage."""
        if self.r.random() < 0.5:
            return 0
        return self.r.getrandbits(self.esize * 8) & ~_P

    # -- the tree ------------------------------------------------------------------------------

    def indices(self, level: _LevelShape, depth: int, prefix: int) -> list[int]:
        """Which entries of a table to write: a run plus scattered ones, minus reserved slots."""
        r = self.r
        lo, hi = level.populate
        n = r.randint(lo, hi)
        banned = self.banned_indices(depth, prefix)
        if level.entries == 4:
            return [i for i in range(4) if i not in banned]
        start = r.randrange(level.entries)
        run = [(start + k) % level.entries for k in range(n // 2)]
        scattered = [r.randrange(level.entries) for _ in range(n - len(run))]
        if self.mode == "ia32e" and depth == 0:
            scattered.append(r.randrange(256, 511))  # something in the upper canonical half
        return sorted({i for i in run + scattered if i not in banned})

    def banned_indices(self, depth: int, prefix: int) -> set[int]:
        """The oracle's reserved slot: PML4[511], PD[511] under PDPTE[3], PD[1023]."""
        if self.mode == "ia32e" and depth == 0:
            return {511}
        if self.mode == "32" and depth == 0:
            return {1023}
        if self.mode == "pae" and depth == 1 and prefix == 3 << 30:
            return {511}
        return set()

    def fill(self, table: int, depth: int, prefix: int) -> None:
        """Write the entries of one table and recurse into the tables they point to."""
        level = self.shapes[depth]
        last = depth == len(self.shapes) - 1
        for index in self.indices(level, depth, prefix):
            va = prefix | index << level.shift
            span = 1 << level.shift
            addr = table + index * self.esize
            if self.mode == "pae" and depth == 0:
                self.pdpte(addr, va)
                continue
            if self.r.random() >= (0.93 if depth == 0 else 0.86):
                self.put(addr, self.not_present())
                self.targets.append(_Target(va, span, "np", 0))
            elif last:
                self.leaf_4k(addr, level, va)
            elif level.large and self.r.random() < (0.2 if level.large == 1 << 30 else 0.3):
                self.leaf_large(addr, level, va)
            else:
                self.pointer(addr, level, depth, va)

    def pdpte(self, addr: int, va: int) -> None:
        """PAE PDPTE: P, PWT, PCD, ignored 11:9 and the PD address; never a reserved bit."""
        r = self.r
        child = self.alloc_table() if r.random() < 0.85 else None
        if child is None:
            self.put(addr, self.not_present())
            self.targets.append(_Target(va, 1 << 30, "np", 0))
            return
        value = child | _P | (r.getrandbits(2) << 3 if r.random() < 0.3 else 0)
        value |= r.getrandbits(3) << 9 if r.random() < 0.3 else 0
        self.put(addr, value)
        self.fill(child, 1, va)

    def pointer(self, addr: int, level: _LevelShape, depth: int, va: int) -> None:
        child = self.alloc_table()
        if child is None:
            self.leaf_or_np(addr, level, va)
            return
        value = child | _P | (self.noise(pointer=True) & ~_PS)
        value, rsvd = self.maybe_reserved(value, level, large=False, rate=0.015)
        self.put(addr, value)
        if rsvd:
            self.targets.append(_Target(va, 1 << level.shift, "rsvd", 0))
        self.fill(child, depth + 1, va)

    def leaf_or_np(self, addr: int, level: _LevelShape, va: int) -> None:
        if level.large:
            self.leaf_large(addr, level, va)
        else:
            self.put(addr, self.not_present())
            self.targets.append(_Target(va, 1 << level.shift, "np", 0))

    def leaf_4k(self, addr: int, level: _LevelShape, va: int) -> None:
        r = self.r
        if r.random() < 0.01:
            frame = r.randrange(self.nframes, 0x8000) * PAGE  # outside the image (still < 1 GiB)
        else:
            frame = r.randrange(self.nframes) * PAGE
        value = frame | _P | self.noise()
        if r.random() < 0.2:
            value |= _PS  # PAT in a PTE
        value, rsvd = self.maybe_reserved(value, level, large=False)
        self.put(addr, value)
        self.targets.append(_Target(va, PAGE, "rsvd" if rsvd else "leaf", frame))

    def leaf_large(self, addr: int, level: _LevelShape, va: int) -> None:
        r = self.r
        size = level.large
        frame = 0
        if r.random() < 0.05:
            frame = size * r.randrange(1, 3)  # outside the image, below the harness frames
        value = frame | _P | _PS | self.noise()
        if r.random() < 0.3:
            value |= _PAT_LARGE
        pa = frame
        if self.mode == "32" and r.random() < 0.2:
            high = r.randrange(1, 256)  # PSE-36: PDE bits 20:13 are PA bits 39:32
            value |= high << 13
            pa |= high << 32
        value, rsvd = self.maybe_reserved(value, level, large=True)
        self.put(addr, value)
        self.targets.append(_Target(va, size, "rsvd" if rsvd else "leaf", pa))

    # -- data frames ---------------------------------------------------------------------------

    def fill_data(self) -> None:
        """Random bytes in every frame that is not a table.

        In 32-bit paging a data frame can be read as a page table (a 4M PDE under CR4.PSE=0),
        so there every 32-bit word is shaped like an entry whose frame lies inside the image.
        """
        tables = set(self.tables)
        word_mask = ((self.phys_size - 1) | 0xFFF) & 0xFFFF_FFFF
        frame_mask = int.from_bytes(word_mask.to_bytes(4, "little") * (PAGE // 4), "little")
        for pfn in range(self.nframes):
            base = pfn * PAGE
            if base in tables:
                continue
            data = self.r.randbytes(PAGE)
            if self.mode == "32":
                masked = int.from_bytes(data, "little") & frame_mask
                data = masked.to_bytes(PAGE, "little")
            self.img[base : base + PAGE] = data

    # -- accesses ------------------------------------------------------------------------------

    def canonical(self, va: int) -> int:
        if self.mode == "ia32e" and va & (1 << 47):
            return va | 0xFFFF_0000_0000_0000
        return va

    def offset_into(self, t: _Target) -> int:
        """An offset into the target's span; for a leaf, mostly one that lands in the image."""
        r = self.r
        room = t.span
        if t.kind == "leaf" and t.pa < self.phys_size and r.random() < 0.9:
            room = min(t.span, self.phys_size - t.pa)
        pick = r.random()
        if pick < 0.15:
            return 0
        if pick < 0.2:
            return min(room, PAGE) - 1
        if pick < 0.3:
            return r.randrange(PAGE) if room >= PAGE else r.randrange(room)
        return r.randrange(room)

    def pool_va(self) -> int:
        """One interesting linear address: mostly under a present leaf (large pages favoured,
        since there are few of them), some under not-present or reserved entries, a few
        unpopulated and, in IA-32e, a few non-canonical."""
        r = self.r
        pick = r.random()
        if self.mode == "ia32e" and pick < 0.03:
            return self.non_canonical()
        if pick < 0.07 or not self.targets:
            return self.unpopulated_va()
        groups = [
            (0.3, [t for t in self.targets if t.kind == "leaf" and t.span > PAGE]),
            (0.5, [t for t in self.targets if t.kind == "leaf" and t.span == PAGE]),
            (0.2, [t for t in self.targets if t.kind != "leaf"]),
        ]
        weights = [w if ts else 0.0 for w, ts in groups]
        group = r.choices([ts for _, ts in groups], weights=weights)[0]
        t = r.choice(group)
        return self.canonical(t.va + self.offset_into(t))

    def unpopulated_va(self) -> int:
        """A random linear address outside the oracle's reserved range."""
        r = self.r
        while True:
            if self.mode == "ia32e":
                va = self.canonical(r.getrandbits(48))
                if va < 0xFFFF_FF80_0000_0000:
                    return va
            else:
                va = r.getrandbits(32)
                if va < (0xFFC0_0000 if self.mode == "32" else 0xFFE0_0000):
                    return va

    def non_canonical(self) -> int:
        r = self.r
        low = r.getrandbits(48)
        high = r.getrandbits(16)
        va = high << 48 | low
        if va >> 47 in (0, 0x1FFFF):
            va ^= 1 << r.randrange(48, 64)
        return va

    def access_spec(self, va: int) -> AccessSpec:
        r = self.r
        return AccessSpec(
            vaddr=va,
            access=r.choices("rwx", weights=(4, 3.5, 2.5))[0],
            cpl=0 if r.random() < 0.5 else 3,
            wp=r.random() < 0.75,
            nxe=r.random() < 0.8,  # also in 32-bit paging, where it must not set I/D
            smep=r.random() < 0.3,
            smap=r.random() < 0.3,
            ac=r.random() < 0.3,
            pse=r.random() < 0.7,  # ignored by PAE and IA-32e paging
        )

    def build(self, n_accesses: int) -> RandomCase:
        r = self.r
        root = self.alloc_table()
        assert root is not None
        if self.mode == "pae":
            root += r.randrange(PAGE // 32) * 32  # the PDPT is 32-byte aligned
        self.fill_data()
        self.fill(root, 0, 0)
        cr3 = root
        if r.random() < 0.4:
            cr3 |= r.getrandbits(2) << 3  # PWT/PCD: never part of the root address
        pool = [self.pool_va() for _ in range(r.randint(30, 60))]
        accesses = tuple(self.access_spec(r.choice(pool)) for _ in range(n_accesses))
        return RandomCase(
            seed=0,
            mode=self.mode,
            phys_size=self.phys_size,
            image=bytes(self.img),
            cr3=cr3,
            table_frames=tuple(sorted(self.tables)),
            accesses=accesses,
        )


def generate(
    seed: int, mode: str, n_accesses: int = 200, *, phys_size: int | None = None
) -> RandomCase:
    """Build the random case for (seed, mode): an image, its CR3 and ``n_accesses`` accesses."""
    case = _Generator(seed, mode, phys_size).build(n_accesses)
    return RandomCase(
        seed=seed,
        mode=case.mode,
        phys_size=case.phys_size,
        image=case.image,
        cr3=case.cr3,
        table_frames=case.table_frames,
        accesses=case.accesses,
    )


# -- hand-written images and a raw path reader (for targeted tests and failure messages) ------


class RawImage:
    """A zeroed flat physical image with a helper to poke page-table entries by index."""

    def __init__(self, mode: str, size: int = 0x40000) -> None:
        if mode not in MODES:
            raise ValueError(f"RawImage: mode {mode!r} not in {MODES}")
        self.mode = mode
        self.esize = 4 if mode == "32" else 8
        self.data = bytearray(size)

    def set(self, table: int, index: int, value: int) -> RawImage:
        """Write entry ``index`` of the table at physical ``table``; returns self for chaining."""
        addr = table + index * self.esize
        self.data[addr : addr + self.esize] = value.to_bytes(self.esize, "little")
        return self

    def image(self) -> bytes:
        return bytes(self.data)


# The hand-written layout of the targeted tests (test_differential's observed error codes and
# test_oracle_selfcheck): one path down to the page table that maps VA 0x400000.
#   ia32e: PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> [2] PT 0x4000
#   pae:   PDPT 0x1000 -> [0] PD 0x2000 -> [2] PT 0x3000
#   32:    PD 0x1000 -> [1] PT 0x2000
HAND_VA = 0x40_0000  # mapped by entry 0 of HAND_PT
HAND_PT = {"ia32e": 0x4000, "pae": 0x3000, "32": 0x2000}
HAND_DATA = 0x10000  # the data frame the tests' PTEs point to
_PTR = _P | _RW | _US


def hand_upper(mode: str, pde_flags: int = _PTR) -> list[tuple[int, int, int]]:
    """The entries above ``HAND_PT[mode]`` as (table, index, value): permissive table pointers
    (a PAE PDPTE has only P), except the PDE that points to the PT, which gets ``pde_flags``."""
    pt = HAND_PT[mode]
    if mode == "ia32e":
        return [(0x1000, 0, 0x2000 | _PTR), (0x2000, 0, 0x3000 | _PTR), (0x3000, 2, pt | pde_flags)]
    if mode == "pae":
        return [(0x1000, 0, 0x2000 | _P), (0x2000, 2, pt | pde_flags)]
    return [(0x1000, 1, pt | pde_flags)]


def hand_image(mode: str, pde_flags: int = _PTR, size: int = 0x40000) -> RawImage:
    """A ``size``-byte image holding ``hand_upper(mode, pde_flags)``; the PT itself is empty."""
    img = RawImage(mode, size)
    for table, index, value in hand_upper(mode, pde_flags):
        img.set(table, index, value)
    return img


def raw_path(
    read: Callable[[int, int], bytes], mode: str, cr3: int, vaddr: int, *, pse: bool
) -> list[tuple[str, int, int]]:
    """The entries a walk of ``vaddr`` reads, following only P and PS (no rights, no reserved
    bits): [(level, entry address, value)]. ``read(addr, size) -> bytes`` reads physical memory.

    Used to show a human the walk in a failure message, and to find 1G leaves; it is not an
    oracle and makes no judgement.
    """
    esize = 4 if mode == "32" else 8
    addr_mask = 0xFFFF_F000 if mode == "32" else 0x0000_00FF_FFFF_F000
    levels: list[tuple[str, int, int, int]]  # (name, shift, index mask, large-page size or 0)
    if mode == "ia32e":
        levels = [("PML4", 39, 0x1FF, 0), ("PDPT", 30, 0x1FF, 1 << 30), ("PD", 21, 0x1FF, 1 << 21)]
        table = cr3 & addr_mask
    elif mode == "pae":
        levels = [("PDPT", 30, 0x3, 0), ("PD", 21, 0x1FF, 1 << 21)]
        table = cr3 & 0xFFFF_FFE0
    else:
        levels = [("PD", 22, 0x3FF, (1 << 22) if pse else 0)]
        table = cr3 & 0xFFFF_F000
    levels.append(("PT", 12, 0x3FF if mode == "32" else 0x1FF, 0))
    out: list[tuple[str, int, int]] = []
    for name, shift, mask, large in levels:
        ea = table + ((vaddr >> shift) & mask) * esize
        value = int.from_bytes(read(ea, esize), "little")
        out.append((name, ea, value))
        if not value & _P or (large and value & _PS) or name == "PT":
            break
        table = value & addr_mask
    return out
