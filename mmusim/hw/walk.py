"""The page walker: ``translate(mem, ctl, va, access, cpl) -> Translation | PageFault | GeneralProtection``.

One loop serves every mode (the differences are data, see ``paging.walk_plan``). At each level, in
the SDM's order [Intel SDM Vol. 3A §4.7]:

1. P=0: not-present #PF (error code P=0); the walk stops.
2. a reserved bit set: #PF with P=1 and RSVD=1; the walk stops.
3. otherwise combine the rights -- U/S and R/W are ANDed, XD is ORed -- and set A in a table
   pointer as soon as it is used (before the next level is read), or stop at the leaf.

With the translation complete, the combined rights are checked against the access (SDM 4.6,
``rights_allow``); a refusal is a protection #PF. Only a successful access sets A (and D for a
write) in the leaf. This is what the oracle (Unicorn 2.1.4, i.e. QEMU's walker) does; the SDM
leaves the leaf's A on a protection fault model-specific, and allows the upper-level A bits to be
set by a walk that later faults.

Deviations, all named in docs/hw.md:

* PAE PDPTEs are registers loaded from memory at MOV to CR3 (``load_pdptes``); a present PDPTE with
  a reserved bit gives #GP(0) there. If no registers are passed, ``translate`` loads them first --
  as if CR3 had just been written.
* An implicit supervisor-mode access (GDT, IDT, TSS reads) is not modelled: every access is explicit.
* Protection keys, PCIDs, 5-level paging and the memory type (PAT/PWT/PCD) are not modelled; their
  bits are carried in the entries and ignored.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from mmusim.hw.paging import (
    GP_VECTOR,
    MODE_32,
    MODE_IA32E,
    MODE_PAE,
    MODES,
    PF_VECTOR,
    Access,
    LevelPlan,
    PagingMode,
    PfErrorCode,
    PteFlags,
    WalkPlan,
    is_canonical,
    walk_plan,
)
from mmusim.hw.physmem import PhysMem

_A = int(PteFlags.A)
_D = int(PteFlags.D)
_P = int(PteFlags.P)
_RW = int(PteFlags.RW)
_US = int(PteFlags.US)
_PS = int(PteFlags.PS)
_G = int(PteFlags.G)
_NX = int(PteFlags.NX)
# Access kinds as module constants: reading ``Access.WRITE`` goes through the enum metaclass and
# costs several times a comparison, and rights_allow runs on every walk.
_WRITE = Access.WRITE
_EXEC = Access.EXEC

# One entry of a walk: (level name, physical address of the entry, value read).
WalkEntry = tuple[str, int, int]

# One level of a walk plan in the form the walk loop unpacks (a plain tuple, the cheapest way to
# hand it ten values): level name; shift and mask that take the entry's byte offset in its table
# straight from the linear address; PDPTE register?; last level?; large-page size here (0 if none,
# and at the last level); reserved bits of a table pointer and of a large leaf; address mask; the
# LevelPlan. The masks are plain ints: a ``PteFlags`` mask would make each ``&`` a call into enum.
_Step = tuple[str, int, int, bool, bool, int, int, int, int, LevelPlan]


def _walk_steps(plan: WalkPlan) -> tuple[_Step, ...]:
    """The levels of ``plan`` as walk steps (computed once per ``ControlState``)."""
    esize = plan.mode.entry_size
    last = len(plan.levels) - 1
    return tuple(
        (
            lp.level.name,
            lp.shift - (esize.bit_length() - 1),  # (va >> shift) * esize, without the multiply
            lp.index_mask * esize,
            lp.level.register,
            i == last,
            0 if i == last else lp.large_size,
            int(lp.table_rsvd),
            int(lp.leaf_rsvd),
            int(lp.addr_mask),
            lp,
        )
        for i, lp in enumerate(plan.levels)
    )


@attrs.frozen(slots=True)
class ControlState:
    """The control-register bits that paging depends on (SDM 4.1). Paging is on (CR0.PG=1).

    The mode follows from CR4.PAE and EFER.LME as on hardware: LME and PAE give IA-32e 4-level
    paging, PAE alone gives PAE paging, neither gives 32-bit paging.
    """

    cr3: int
    wp: bool = True  # CR0.WP
    pse: bool = False  # CR4.PSE
    pae: bool = False  # CR4.PAE
    pge: bool = False  # CR4.PGE
    smep: bool = False  # CR4.SMEP
    smap: bool = False  # CR4.SMAP
    lme: bool = False  # EFER.LME (EFER.LMA follows it while paging is on)
    nxe: bool = False  # EFER.NXE
    ac: bool = False  # EFLAGS.AC
    maxphyaddr: int = attrs.field(default=40)
    page1gb: bool = True  # CPUID.80000001H:EDX.Page1GB
    plan: WalkPlan = attrs.field(init=False, eq=False, repr=False)
    # Derived once here rather than at every walk: the root address and the plan's levels.
    _root: int = attrs.field(init=False, eq=False, repr=False)
    _steps: tuple[_Step, ...] = attrs.field(init=False, eq=False, repr=False)

    @maxphyaddr.validator
    def _maxphyaddr_ok(self, _attr: object, value: int) -> None:
        if not 32 <= value <= 52:
            raise ValueError(f"ControlState: MAXPHYADDR {value} outside 32..52")

    def __attrs_post_init__(self) -> None:
        if self.lme and not self.pae:
            raise ValueError("ControlState: EFER.LME with CR4.PAE=0 (MOV to CR0 would #GP)")
        mode = MODE_IA32E if self.lme else MODE_PAE if self.pae else MODE_32
        plan = walk_plan(mode, self.nxe, self.pse, self.maxphyaddr, self.page1gb)
        object.__setattr__(self, "plan", plan)
        mask = mode.cr3_mask_low
        if mode is MODE_IA32E:
            mask &= (1 << self.maxphyaddr) - 1
        object.__setattr__(self, "_root", self.cr3 & mask)
        object.__setattr__(self, "_steps", _walk_steps(plan))

    @property
    def mode(self) -> PagingMode:
        return self.plan.mode

    @property
    def root(self) -> int:
        """Physical address of the top-level table (or of the PAE PDPT)."""
        return self._root

    @classmethod
    def for_mode(cls, mode: str, cr3: int, **flags: bool | int) -> ControlState:
        """Build the control state of a named mode ("32", "pae", "ia32e")."""
        if mode not in MODES:
            raise ValueError(
                f"ControlState.for_mode: unknown mode {mode!r} (allowed: 32, pae, ia32e)"
            )
        return cls(cr3, pae=mode != "32", lme=mode == "ia32e", **flags)  # type: ignore[arg-type]


@attrs.frozen(slots=True)
class Translation:
    """A successful translation: the physical address and what a TLB would cache."""

    vaddr: int
    paddr: int
    page_size: int
    user: bool  # U/S ANDed over the levels
    writable: bool  # R/W ANDed over the levels
    nx: bool  # XD ORed over the levels (False without NXE)
    global_: bool  # G in the leaf (takes effect only with CR4.PGE)
    dirty: bool  # D in the leaf after this access
    entries: tuple[WalkEntry, ...]

    @property
    def frame(self) -> int:
        """Physical base of the page."""
        return self.paddr & ~(self.page_size - 1)


@attrs.frozen(slots=True)
class PageFault:
    """#PF (vector 14): the error code, CR2 and where the walk stopped."""

    cr2: int
    error_code: int
    reason: str  # "not-present", "reserved-bit" or "protection"
    level: str  # name of the table whose entry stopped the walk ("PT" for a protection fault)
    entry_addr: int
    entry: int
    entries: tuple[WalkEntry, ...]
    vector: int = PF_VECTOR

    @property
    def flags(self) -> PfErrorCode:
        return PfErrorCode(self.error_code)


@attrs.frozen(slots=True)
class GeneralProtection:
    """#GP(0) (vector 13): a non-canonical address, or a PAE PDPTE with reserved bits at load."""

    vaddr: int
    reason: str
    error_code: int = 0
    vector: int = GP_VECTOR


Result = Translation | PageFault | GeneralProtection


def rights_allow(
    user: bool, writable: bool, nx: bool, access: Access, cpl: int, ctl: ControlState
) -> bool:
    """May an access of kind ``access`` at ``cpl`` use a page with these combined rights? (SDM 4.6)"""
    if cpl == 3:
        if not user:
            return False
        if access == _WRITE:
            return writable
        return not (access == _EXEC and nx)
    if access == _EXEC:
        return not nx and not (user and ctl.smep)
    if user and ctl.smap and not ctl.ac:
        return False
    return writable or not ctl.wp or access != _WRITE


def error_code_base(access: Access, cpl: int, ctl: ControlState) -> int:
    """The W/R, U/S and I/D bits of a #PF error code: they describe the access."""
    code = 0
    if access == _WRITE:
        code |= PfErrorCode.W
    elif access == _EXEC and (ctl.smep or (ctl.pae and ctl.nxe)):
        code |= PfErrorCode.ID  # I/D: fetch with SMEP=1, or PAE paging with NXE=1 [SDM 4.7]
    if cpl == 3:
        code |= PfErrorCode.US
    return int(code)


def load_pdptes(mem: PhysMem, ctl: ControlState) -> tuple[int, ...] | GeneralProtection:
    """PAE: copy the four PDPTEs into the PDPTE registers, as MOV to CR3 does (SDM 4.4.1).

    A present PDPTE with a reserved bit set makes the load fail with #GP(0).
    """
    base = ctl.cr3 & 0xFFFF_FFE0
    rsvd = ctl.plan.levels[0].table_rsvd
    values = tuple(mem.read_u64(base + 8 * i) for i in range(4))
    for i, e in enumerate(values):
        if e & _P and e & rsvd:
            return GeneralProtection(
                0, f"PDPTE{i} at {base + 8 * i:#x} = {e:#018x} has reserved bits {e & rsvd:#x}"
            )
    return values


def translate(
    mem: PhysMem,
    ctl: ControlState,
    va: int,
    access: Access = Access.READ,
    cpl: int = 0,
    pdptes: tuple[int, ...] | None = None,
) -> Result:
    """Translate linear address ``va`` for one access, updating A/D bits in ``mem`` as hardware does.

    ``pdptes`` (PAE only) are the PDPTE registers; if omitted they are loaded from CR3 first.
    """
    plan = ctl.plan
    mode = plan.mode
    if mode is MODE_IA32E:
        if not is_canonical(va):
            return GeneralProtection(va, "non-canonical address")
    elif not 0 <= va < 1 << 32:
        raise ValueError(f"translate: {va:#x} is not a 32-bit linear address ({mode.title})")
    if mode is MODE_32:
        read, write = mem.read_u32, mem.write_u32
    else:
        read, write = mem.read_u64, mem.write_u64
    if mode is MODE_PAE and pdptes is None:
        loaded = load_pdptes(mem, ctl)
        if isinstance(loaded, GeneralProtection):
            return loaded
        pdptes = loaded

    table = ctl._root
    steps = ctl._steps
    both = _US | _RW  # U/S and R/W are ANDed over the levels ...
    either = 0  # ... and XD is ORed
    entries: list[WalkEntry] = []
    for name, shift, offset_mask, register, last, large_size, rsvd, rsvd_large, addr, lp in steps:
        ea = table + ((va >> shift) & offset_mask)
        e = pdptes[(va >> 30) & 3] if register and pdptes is not None else read(ea)
        entries.append((name, ea, e))
        if not e & _P:
            return _fault(va, access, cpl, ctl, 0, "not-present", name, ea, e, entries)
        if register:  # a PDPTE register: no rights, no A bit, reserved bits checked at load
            table = e & addr
            continue
        large = large_size and e & _PS
        if e & (rsvd_large if large else rsvd):
            code = PfErrorCode.P | PfErrorCode.RSVD
            return _fault(va, access, cpl, ctl, code, "reserved-bit", name, ea, e, entries)
        both &= e
        either |= e
        if last or large:
            user, writable, nx = bool(both & _US), bool(both & _RW), bool(either & _NX)
            return _leaf(
                write, ctl, va, access, cpl, lp, e, ea, bool(large), user, writable, nx, entries
            )
        if not e & _A:
            write(ea, e | _A)
        table = e & addr
    raise AssertionError("translate: walk ended without a leaf")  # pragma: no cover


def _leaf(
    write: Callable[[int, int], None],
    ctl: ControlState,
    va: int,
    access: Access,
    cpl: int,
    lp: LevelPlan,
    e: int,
    ea: int,
    large: bool,
    user: bool,
    writable: bool,
    nx: bool,
    entries: list[WalkEntry],
) -> Translation | PageFault:
    """Finish a walk at its leaf: check the rights, then set A (and D for a write)."""
    if not rights_allow(user, writable, nx, access, cpl, ctl):
        return _fault(
            va, access, cpl, ctl, PfErrorCode.P, "protection", lp.level.name, ea, e, entries
        )
    if large:
        size = lp.large_size
        frame = e & lp.large_frame
        if lp.pse36:  # 4M page: PDE bits 20:13 are PA bits 39:32 (PSE-36), M capped at 40
            m36 = min(ctl.maxphyaddr, 40)
            frame |= ((e >> 13) & ((1 << (m36 - 32)) - 1)) << 32
    else:
        size = 4096
        frame = e & lp.addr_mask
    new = e | _A
    if access == _WRITE:
        new |= _D
    if new != e:
        write(ea, new)
    return Translation(
        va,
        frame | (va & (size - 1)),
        size,
        user,
        writable,
        nx and ctl.nxe,
        bool(e & _G),
        bool(new & _D),
        tuple(entries),
    )


def _fault(
    va: int,
    access: Access,
    cpl: int,
    ctl: ControlState,
    code: int,
    reason: str,
    level: str,
    ea: int,
    e: int,
    entries: list[WalkEntry],
) -> PageFault:
    return PageFault(
        va, int(code) | error_code_base(access, cpl, ctl), reason, level, ea, e, tuple(entries)
    )


__all__ = [
    "MODE_32",
    "MODE_IA32E",
    "MODE_PAE",
    "ControlState",
    "GeneralProtection",
    "PageFault",
    "Result",
    "Translation",
    "load_pdptes",
    "rights_allow",
    "translate",
]
