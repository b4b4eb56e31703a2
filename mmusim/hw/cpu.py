"""A CPU: the registers that matter for paging, and memory access through its TLB, then the walker.

``Cpu.translate`` is the one path every access takes: look the page up in the TLB and check the
cached rights against the current control bits; on a miss (or when a cached entry cannot decide the
access) walk the tables, fill the TLB, and go on. A fault does not return a value: it raises a
``Trap`` carrying the vector, the error code and CR2 -- the point where a ``PageFault`` value
becomes an exception (style.md, example 4). A #PF also invalidates the TLB entry of its page, as
on hardware (SDM 4.10.4.1).

Control-register writes invalidate what the SDM says they invalidate (SDM 4.10.4.1):

=========================================  ===============================================
MOV to CR3                                  non-global entries; PAE: reloads the PDPTE registers
MOV to CR4 changing PGE or PAE, setting SMEP every entry (the model has no PCIDs)
MOV to CR0 changing WP; EFLAGS.AC            nothing: rights are checked against the live bits
=========================================  ===============================================

Rights are decided from a cached entry by table lookup: ``_allowed[cpl == 3][rights][access]``,
recomputed when a control bit changes. A write through an entry whose
D flag is clear is not allowed from the TLB, so the walker runs and sets D in memory -- what both
hardware and QEMU do.
"""

from __future__ import annotations

import functools

import attrs

from mmusim.hw.paging import (
    GP_VECTOR,
    MODE_IA32E,
    MODE_PAE,
    PF_VECTOR,
    SS_VECTOR,
    Access,
    PagingMode,
    is_canonical,
)
from mmusim.hw.physmem import PhysMem
from mmusim.hw.tlb import R_DIRTY, R_NX, R_USER, R_WRITABLE, Tlb
from mmusim.hw.walk import (
    ControlState,
    GeneralProtection,
    PageFault,
    Translation,
    load_pdptes,
    rights_allow,
    translate,
)

_MASK64 = (1 << 64) - 1


@attrs.define(eq=False, auto_exc=True)
class Trap(Exception):
    """An exception raised by the CPU: vector, error code, and (for #PF) CR2 and the walk."""

    vector: int
    error_code: int
    cr2: int | None
    cpu_id: int
    access: Access | None = None
    fault: PageFault | GeneralProtection | None = None

    def __str__(self) -> str:
        name = {PF_VECTOR: "#PF", GP_VECTOR: "#GP", SS_VECTOR: "#SS", 8: "#DF"}.get(
            self.vector, f"vector {self.vector}"
        )
        where = f" at {self.cr2:#x}" if self.cr2 is not None else ""
        return f"{name}{where} error code {self.error_code:#x} on CPU {self.cpu_id}"


# ``[user][rights][access]``: may a cached entry with this rights code serve the access? Nested
# tuples, because three subscripts cost less than computing one index from the enum and the CPL.
_Allowed = tuple[tuple[tuple[bool, ...], ...], ...]


@functools.lru_cache(maxsize=64)
def _allowed_table(ctl: ControlState) -> _Allowed:
    """For CPL < 3 and CPL 3, each rights code and each access: does a cached entry allow it?"""
    return tuple(
        tuple(
            tuple(
                # A write through an entry with D clear walks again, so that D gets set in memory.
                not (access == Access.WRITE and not code & R_DIRTY)
                and rights_allow(
                    bool(code & R_USER),
                    bool(code & R_WRITABLE),
                    bool(code & R_NX),
                    access,
                    3 if user else 0,
                    ctl,
                )
                for access in Access
            )
            for code in range(16)
        )
        for user in (False, True)
    )


def _rights_code(t: Translation) -> int:
    return (
        (R_USER if t.user else 0)
        | (R_WRITABLE if t.writable else 0)
        | (R_NX if t.nx else 0)
        | (R_DIRTY if t.dirty else 0)
    )


@attrs.define(eq=False)
class Cpu:
    """One logical processor. ``ctl`` holds CR0.WP, CR3, CR4, EFER and EFLAGS.AC; ``cpl`` and ``sp``
    are the current privilege level and stack pointer. Private to the CPU that owns it."""

    mem: PhysMem
    ctl: ControlState
    cpu_id: int = 0
    cpl: int = 0
    sp: int = 0
    cr2: int = 0
    tlb: Tlb = attrs.field(factory=Tlb)
    use_tlb: bool = True  # False: every access walks (for teaching and benchmarks)
    walks: int = 0
    _allowed: _Allowed = attrs.field(init=False, repr=False)
    _pdptes: tuple[int, ...] | None = attrs.field(init=False, default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        self._allowed = _allowed_table(self.ctl)
        self._pdptes = self._load_pdptes(self.ctl)

    @property
    def mode(self) -> PagingMode:
        return self.ctl.mode

    @property
    def _va_mask(self) -> int:
        return _MASK64 if self.mode is MODE_IA32E else 0xFFFF_FFFF

    # -- control registers ------------------------------------------------------------------

    def write_cr3(self, cr3: int) -> None:
        """MOV to CR3: flush non-global TLB entries; in PAE reload the PDPTE registers."""
        if self.mode is MODE_IA32E and cr3 >> self.ctl.maxphyaddr:
            raise Trap(GP_VECTOR, 0, None, self.cpu_id)  # reserved bits 63:M
        new = attrs.evolve(self.ctl, cr3=cr3)
        self._pdptes = self._load_pdptes(new)  # a #GP here leaves CR3 and the TLB as they were
        self.ctl = new
        self.tlb.flush_nonglobal()

    def set_control(self, **bits: bool) -> None:
        """Change CR0.WP, CR4.PSE/PGE/SMEP/SMAP, EFER.NXE or EFLAGS.AC (as MOV to CR0/CR4, WRMSR,
        STAC/CLAC would), with the TLB invalidations the SDM requires."""
        unknown = set(bits) - {"wp", "pse", "pge", "smep", "smap", "nxe", "ac"}
        if unknown:
            raise ValueError(f"Cpu.set_control: cannot change {sorted(unknown)} while paging is on")
        old = self.ctl
        new = attrs.evolve(old, **bits)
        # PAE: a MOV to CR4 changing PGE, PSE or SMEP reloads the PDPTE registers (SDM 4.4.1);
        # WP, SMAP, NXE (WRMSR) and AC (STAC/CLAC) do not. A #GP here changes nothing.
        if old.pge != new.pge or old.pse != new.pse or old.smep != new.smep:
            self._pdptes = self._load_pdptes(new)
        self.ctl = new
        if old.pge != new.pge or (new.smep and not old.smep) or old.pse != new.pse:
            self.tlb.flush_all()
        if old.nxe != new.nxe:
            self.tlb.flush_all()  # entry formats changed (bit 63 reserved or XD)
        self._allowed = _allowed_table(new)

    def _load_pdptes(self, ctl: ControlState) -> tuple[int, ...] | None:
        """The PDPTE registers for ``ctl`` (None outside PAE); #GP(0) if one has reserved bits."""
        if ctl.mode is not MODE_PAE:
            return None
        loaded = load_pdptes(self.mem, ctl)
        if isinstance(loaded, GeneralProtection):
            raise Trap(GP_VECTOR, 0, None, self.cpu_id, fault=loaded)
        return loaded

    # -- TLB maintenance --------------------------------------------------------------------

    def invlpg(self, va: int) -> None:
        """INVLPG: CPL 0 only; a no-op for a non-canonical address in 64-bit mode."""
        if self.cpl != 0:
            raise Trap(GP_VECTOR, 0, None, self.cpu_id)
        self.tlb.invlpg(va & _MASK64)

    def flush_tlb(self) -> None:
        """Flush every entry, global ones included (as toggling CR4.PGE does)."""
        self.tlb.flush_all()

    # -- translation ------------------------------------------------------------------------

    def translate(self, va: int, access: Access = Access.READ) -> int:
        """Physical address for one access at the current CPL; raises ``Trap`` on a fault."""
        if self.use_tlb:
            # The hottest path of mmusim: a TLB hit on a 4K page. Tlb.lookup's first probe is
            # inlined here (and counted as lookup counts it); anything else goes through lookup.
            tlb = self.tlb
            e = tlb._pages.get(va >> 12)
            if e is not None:
                tlb.hits += 1
                if self._allowed[self.cpl == 3][e.rights][access]:
                    return e.frame | (va & 0xFFF)
            else:
                e = tlb.lookup(va)
                if e is not None and self._allowed[self.cpl == 3][e.rights][access]:
                    return e.frame | (va & (e.page_size - 1))
        return self._walk(va, access)

    def _walk(self, va: int, access: Access) -> int:
        self.walks += 1
        res = translate(self.mem, self.ctl, va, access, self.cpl, self._pdptes)
        if isinstance(res, Translation):
            if self.use_tlb:
                self.tlb.fill(
                    va, res.frame, res.page_size, _rights_code(res), res.global_ and self.ctl.pge
                )
            return res.paddr
        if isinstance(res, PageFault):
            self.cr2 = va
            self.tlb.invlpg(va)
            raise Trap(PF_VECTOR, res.error_code, va, self.cpu_id, access, res)
        raise Trap(GP_VECTOR, 0, None, self.cpu_id, access, res)

    def _pieces(self, va: int, size: int, access: Access) -> list[tuple[int, int]]:
        """Translate every page an access of ``size`` bytes touches, before touching memory, so
        that a fault on the second page leaves the first unwritten. CR2 is then the first byte
        of the faulting page (UNVERIFIED on hardware; see docs/hw.md)."""
        if self.mode is MODE_IA32E and size > 4096 - (va & 0xFFF):
            # The canonical check covers every byte and comes before any walk (SDM Vol. 1
            # 3.3.7.1); a non-canonical first byte is reported by the walker itself.
            last = (va + size - 1) & _MASK64
            if not is_canonical(last):
                gp = GeneralProtection(last, "non-canonical address")
                raise Trap(GP_VECTOR, 0, None, self.cpu_id, access, gp)
        pieces = []
        while size > 0:
            n = min(size, 4096 - (va & 0xFFF))
            pieces.append((self.translate(va, access), n))
            va = (va + n) & self._va_mask
            size -= n
        return pieces

    # -- memory access ----------------------------------------------------------------------

    def read(self, va: int, size: int) -> bytes:
        return b"".join(self.mem.read(pa, n) for pa, n in self._pieces(va, size, Access.READ))

    def write(self, va: int, data: bytes) -> None:
        pos = 0
        for pa, n in self._pieces(va, len(data), Access.WRITE):
            self.mem.write(pa, data[pos : pos + n])
            pos += n

    def fetch(self, va: int, size: int = 1) -> bytes:
        return b"".join(self.mem.read(pa, n) for pa, n in self._pieces(va, size, Access.EXEC))

    def read_u64(self, va: int) -> int:
        return int.from_bytes(self.read(va, 8), "little")

    def write_u64(self, va: int, value: int) -> None:
        self.write(va, value.to_bytes(8, "little"))

    # -- the stack --------------------------------------------------------------------------

    def push(self, data: bytes) -> None:
        """Decrement SP by ``len(data)`` and write there, as PUSH does. SP changes only if the
        write succeeds. A non-canonical stack address is #SS(0), not #GP (SDM Vol. 1 3.3.7.1)."""
        new_sp = (self.sp - len(data)) & self._va_mask
        self._stack_access(new_sp, Access.WRITE, data)
        self.sp = new_sp

    def pop(self, size: int) -> bytes:
        data = self._stack_access(self.sp, Access.READ, size)
        self.sp = (self.sp + size) & self._va_mask
        return data

    def _stack_access(self, va: int, access: Access, what: bytes | int) -> bytes:
        size = len(what) if isinstance(what, bytes) else what
        if self.mode is MODE_IA32E and not (
            is_canonical(va) and is_canonical((va + max(size, 1) - 1) & _MASK64)
        ):
            raise Trap(SS_VECTOR, 0, None, self.cpu_id, access)  # any byte non-canonical
        if access == Access.WRITE:
            assert isinstance(what, bytes)
            self.write(va, what)
            return what
        assert isinstance(what, int)
        return self.read(va, what)
