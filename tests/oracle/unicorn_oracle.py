"""Unicorn 2.1.4 as an x86 paging oracle that runs one real instruction per access.

Each call to :meth:`UnicornOracle.access` makes exactly one architectural memory access with a
real instruction, at the requested CPL, on Unicorn's own copy of physical memory:

* read    ``mov al, [rbx]``  (``8A 03``)
* write   ``mov [rbx], al``  (``88 03``)
* execute ``jmp rbx``        (``FF E3``), then the fetch at the target

The result (fault vector, #PF error code, CR2, physical address) comes from that instruction, and
so do the A/D bits it leaves in memory. The Unicorn facts this module relies on were seen in this
project's oracle runs of Unicorn 2.1.4, whose x86 walker is QEMU 5's ``handle_mmu_fault``
(``qemu/target/i386/excp_helper.c`` in Unicorn's tree). The comments below name these pitfalls by
their number:

1. A fault is not delivered through the guest IDT, so state leaks: ``env->old_exception`` is never
   reset, and without a context restore in between the second #PF becomes a #DF (error code 0)
   and the third a triple fault (a silent stop).
2. Stopping at a page's first byte walks the previous page: with a page-aligned ``until``, QEMU
   fetch-walks the page before it, which can raise a spurious #PF and changes CR2, the error code
   and A bits.
3. The softmmu TLB is not architectural: it ignores G, caches large pages as 4K pieces, and keeps
   a stale translation after a PTE change until it is flushed.
4. Reserved bits are checked as if MAXPHYADDR were 40, for every CPU model.
5. PAE PDPTEs are re-read on every walk, not loaded at MOV to CR3: bits 2:1 and 8:5 are not
   checked, bits 63:40 give a #PF with RSVD rather than a #GP, and no A flag is set in a PDPTE.

Harness
-------
Running code with paging on needs code, a stack and a GDT mapped in the test's address space.
The harness owns nine physical frames at ``HARNESS_PHYS`` (far above the test's RAM)::

    HARNESS_PHYS + 0x0000  root table used only at construction (PML4 / PDPT / PD)
                 + 0x1000  IA-32e: harness PDPT.  PAE: substitute PD for an absent PDPTE[3]
                 + 0x2000  IA-32e: harness PD
                 + 0x3000  harness PT: maps the five pages below at HARNESS_VA + i * 4K
                 + 0x4000  GDT            (supervisor, RW)     HARNESS_VA + 0x0000
                 + 0x5000  kernel code    (supervisor, RO)     HARNESS_VA + 0x1000
                 + 0x6000  kernel stack   (supervisor, RW)     HARNESS_VA + 0x2000
                 + 0x7000  user code      (user, RO)           HARNESS_VA + 0x3000
                 + 0x8000  user stack     (user, RW)           HARNESS_VA + 0x4000

and links them into the test's tables through ONE entry (the *reserved slot*), written before
each access and restored to its original value right after it, so the test image stays
comparable byte for byte:

    =======  ===========================================  ==========================
    mode     reserved slot (written, then restored)       reserved VA range
    =======  ===========================================  ==========================
    ia32e    PML4[511]                                    0xFFFF_FF80_0000_0000 - top
    pae      PD[511] of the PD that PDPTE[3] points to     0xFFE0_0000 - 0xFFFF_FFFF
    32       PD[1023]                                     0xFFC0_0000 - 0xFFFF_FFFF
    =======  ===========================================  ==========================

Tests must not access the reserved VA range, must not let the slot's entry be reachable by any
other path (no table shared with another level or index), and must not map the harness frames.
In PAE, when PDPTE[3] is not present, the oracle temporarily points PDPTE[3] at a harness PD whose
only present entry is the slot. That is observably identical: a walk under it still ends in a
not-present #PF (error code P=0, same CR2), and Unicorn sets no A flag in PDPTEs (pitfall 5).
A present PDPTE[3] must have no reserved bits (deviation "pae-pdpte-reserved").

CPL 3 is reached once, at construction, with a real ``iretq``/``iretd`` through the GDT; the CPU
context is saved there and at CPL 0, and one of the two clean contexts is restored before every
access (pitfall 1). The control registers are then written in the order CR4, EFER, CR3, CR0, the
softmmu TLB is flushed (pitfall 3), and the instruction runs with ``until`` set to the next
instruction, which is never page-aligned (pitfall 2).

How each observable is obtained
-------------------------------
* vector, CR2, error code: in the ``UC_HOOK_INTR`` callback, at the moment of the fault.
  The error code is ``CPUX86State.error_code``, read from a ``uc_context_save`` blob at
  ``ERROR_CODE_OFFSET_FROM_END`` bytes before its end. The offset is calibrated at
  construction with two #GP(selector) faults and the oracle refuses to run if it moved.
  Reading in the hook matters: at the end of every run Unicorn re-walks ``until - 1`` as a
  fetch, which for a faulting fetch overwrites CR2 and turns the error code into a #DF's 0.
* physical address of a read or write: the ``UC_HOOK_MEM_READ``/``UC_HOOK_MEM_WRITE``
  callbacks of Unicorn 2.1.4 receive the physical address, after the walk and before the
  access. For an access outside mapped RAM the ``*_UNMAPPED`` callbacks receive it instead.
* physical address of a fetch: ``uc_vmem_translate`` (through ctypes) right after the fetch
  succeeded. The softmmu TLB then holds the translation for the same CPL and access type, so
  the probe is a TLB hit: it does not walk and cannot change A/D. For reads and writes the
  same probe is made and must agree with the hook's address.
* the data byte a write stores is put back afterwards (its old value is read in the write
  hook, after the walk's A/D updates and before the store), so only A/D bits ever change.

Execute accesses: the bytes at the target are never decoded. With ``until`` equal to the
target, Unicorn's translator emits its exit block before decoding anything. For a page-aligned
VA the jump goes to VA+1 instead (same page, same outcome; pitfall 2), and CR2 is reported as
VA only when Unicorn's CR2 is exactly VA+1.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from unicorn import (
    UC_ARCH_X86,
    UC_HOOK_INTR,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_UNMAPPED,
    UC_HOOK_MEM_WRITE,
    UC_MODE_32,
    UC_MODE_64,
    UC_PROT_ALL,
    Uc,
    UcError,
)
from unicorn import unicorn_const as ucc
from unicorn import x86_const as x86
from unicorn.unicorn_py3.unicorn import uclib

__all__ = [
    "ERROR_CODE_OFFSET_FROM_END",
    "HARNESS_PHYS",
    "MODES",
    "OracleCalibrationError",
    "OracleResult",
    "UnicornOracle",
]

MODES = ("32", "pae", "ia32e")

#: Offset of CPUX86State.error_code, counted back from the end of a context blob (Unicorn 2.1.x on
#: an x86-64 host; calibrated at construction).
ERROR_CODE_OFFSET_FROM_END = 184
#: Offset of CPUX86State.old_exception, counted back from the end (-1 in a clean context).
OLD_EXCEPTION_OFFSET_FROM_END = 72
#: Selectors whose #GP error codes calibrate the error-code offset (beyond the GDT limit).
CALIBRATION_SELECTORS = (0x1238, 0x2450)

#: Physical base of the harness frames. Below 4 GiB (32-bit tables must be) and above 1 GiB,
#: so no large page with frame 0 can reach it.
HARNESS_PHYS = 0xC000_0000
_N_HARNESS_FRAMES = 9
_ROOT, _L2, _L3, _PT, _GDT, _KCODE, _KSTACK, _UCODE, _USTACK = range(_N_HARNESS_FRAMES)

#: Virtual base of the five harness pages in each mode.
HARNESS_VA = {"ia32e": 0xFFFF_FF80_0000_0000, "pae": 0xFFE0_0000, "32": 0xFFC0_0000}
_VA_GDT, _VA_KCODE, _VA_KSTACK, _VA_UCODE, _VA_USTACK = (i * 0x1000 for i in range(5))

# Offsets inside both code pages. None of these, nor the instruction after each, is page-aligned.
_OFF_SETUP = 0x000  # CPL0: load DS/ES/SS with the kernel data selector
_SETUP_LEN = 10  # mov ax, imm16 (4 bytes) + three mov sreg, ax (2 bytes each)
_OFF_TO_USER = 0x040  # CPL0: load DS/ES with the user data selector, then iret to CPL3
_OFF_LANDING = 0x010  # user page: where the iret lands (the CPL3 context is saved here)
_OFF_READ = 0x100  # mov al, [rbx]
_OFF_WRITE = 0x110  # mov [rbx], al
_OFF_EXEC = 0x120  # jmp rbx
_OFF_LOAD_DS = 0x130  # mov ds, ax   (calibration)
_INSN_LEN = 2  # all four instructions above are two bytes long

_SEL_KCODE, _SEL_KDATA, _SEL_UCODE, _SEL_UDATA = 0x08, 0x10, 0x1B, 0x23

_CR0_PE, _CR0_WP, _CR0_PG = 1 << 0, 1 << 16, 1 << 31
_CR4_PSE, _CR4_PAE, _CR4_SMEP, _CR4_SMAP = 1 << 4, 1 << 5, 1 << 20, 1 << 21
_EFER_MSR = 0xC000_0080
_EFER_LME, _EFER_LMA, _EFER_NXE = 1 << 8, 1 << 10, 1 << 11
_RFLAGS_FIXED, _RFLAGS_AC = 1 << 1, 1 << 18

_P, _RW, _US, _A, _D = 0x1, 0x2, 0x4, 0x20, 0x40
_ADDR_MASK_40 = 0x0000_00FF_FFFF_F000  # bits 39:12 (MAXPHYADDR = 40)
_PAE_PDPTE_RESERVED = 0xFFFF_FF00_0000_01E6  # bits 63:40, 8:5, 2:1

_ACCESS_PROT = {"r": ucc.UC_PROT_READ, "w": ucc.UC_PROT_WRITE, "x": ucc.UC_PROT_EXEC}


class OracleCalibrationError(RuntimeError):
    """The Unicorn build does not behave as the oracle was calibrated for; refuse to run."""


@dataclass(frozen=True)
class OracleResult:
    """What one real access did: success with a physical address, or a fault."""

    ok: bool
    paddr: int | None  # physical address of the access on success
    vector: int | None  # 14 (#PF) or 13 (#GP) on fault
    error_code: int | None
    cr2: int | None  # for #PF


@dataclass
class _RunState:
    """What the hooks saw during one emulation run."""

    armed: bool = False
    intno: int | None = None
    cr2: int | None = None
    error_code: int | None = None
    read_paddr: int | None = None
    write_paddr: int | None = None
    write_old: bytes | None = None
    unmapped_paddr: int | None = None


def _gdt(mode: str) -> bytes:
    """Null, kernel code, kernel data, user code, user data: flat, accessed, present."""
    if mode == "ia32e":
        kcode, ucode = 0x00AF_9B00_0000_FFFF, 0x00AF_FB00_0000_FFFF  # L=1
    else:
        kcode, ucode = 0x00CF_9B00_0000_FFFF, 0x00CF_FB00_0000_FFFF  # D=1, G=1
    kdata, udata = 0x00CF_9300_0000_FFFF, 0x00CF_F300_0000_FFFF
    return struct.pack("<5Q", 0, kcode, kdata, ucode, udata)


def _code_page(mode: str, *, kernel: bool) -> bytes:
    """One harness code page; the access snippets sit at the same offsets in both pages."""
    page = bytearray(b"\xf4" * 0x1000)  # hlt everywhere else

    def put(off: int, code: bytes) -> None:
        page[off : off + len(code)] = code

    if kernel:
        # mov ax, KDATA; mov ds, ax; mov es, ax; mov ss, ax; nop
        put(
            _OFF_SETUP,
            b"\x66\xb8" + struct.pack("<H", _SEL_KDATA) + b"\x8e\xd8\x8e\xc0\x8e\xd0\x90",
        )
        iret = b"\x48\xcf" if mode == "ia32e" else b"\xcf"
        # mov ax, UDATA; mov ds, ax; mov es, ax; iretq/iretd
        put(_OFF_TO_USER, b"\x66\xb8" + struct.pack("<H", _SEL_UDATA) + b"\x8e\xd8\x8e\xc0" + iret)
    else:
        put(_OFF_LANDING, b"\x90")
    put(_OFF_READ, b"\x8a\x03")
    put(_OFF_WRITE, b"\x88\x03")
    put(_OFF_EXEC, b"\xff\xe3")
    put(_OFF_LOAD_DS, b"\x8e\xd8")
    return bytes(page)


class UnicornOracle:
    """A Unicorn CPU in one paging mode, with test RAM at [0, phys_size) and a harness above it.

    Reserved for the harness (tests must leave these alone; see the module docstring):

    * ``reserved_va``: the (first, last) linear addresses the harness pages live in.
    * ``reserved_slot``: (table level, index) of the one entry linked to the harness during an
      access and restored afterwards. In PAE it is PD[511] under PDPTE[3].
    * ``reserved_phys``: the (first, last) physical addresses of the harness frames.
    """

    def __init__(self, mode: str, phys_size: int) -> None:
        if mode not in MODES:
            raise ValueError(f"UnicornOracle: mode {mode!r} not in {MODES}")
        if phys_size <= 0 or phys_size % 0x1000 or phys_size > HARNESS_PHYS:
            raise ValueError(f"UnicornOracle: bad phys_size {phys_size:#x}")
        self.mode = mode
        self.phys_size = phys_size
        self.entry_size = 4 if mode == "32" else 8
        self.harness_va = HARNESS_VA[mode]
        if mode == "ia32e":
            self.reserved_va = (self.harness_va, 0xFFFF_FFFF_FFFF_FFFF)
            self.reserved_slot = ("PML4", 511)
        elif mode == "pae":
            self.reserved_va = (self.harness_va, 0xFFFF_FFFF)
            self.reserved_slot = ("PD under PDPTE[3]", 511)
        else:
            self.reserved_va = (self.harness_va, 0xFFFF_FFFF)
            self.reserved_slot = ("PD", 1023)
        self.reserved_phys = (HARNESS_PHYS, HARNESS_PHYS + _N_HARNESS_FRAMES * 0x1000 - 1)
        self.accesses = 0

        self._uc = Uc(UC_ARCH_X86, UC_MODE_64 if mode == "ia32e" else UC_MODE_32)
        self._uc.ctl_set_cpu_model(x86.UC_CPU_X86_BROADWELL)  # the default model lacks SMAP
        self._uc.mem_map(0, phys_size, UC_PROT_ALL)
        self._uc.mem_map(HARNESS_PHYS, _N_HARNESS_FRAMES * 0x1000, UC_PROT_ALL)
        self._reg_ip = x86.UC_X86_REG_RIP if mode == "ia32e" else x86.UC_X86_REG_EIP
        self._reg_bx = x86.UC_X86_REG_RBX if mode == "ia32e" else x86.UC_X86_REG_EBX
        self._reg_sp = x86.UC_X86_REG_RSP if mode == "ia32e" else x86.UC_X86_REG_ESP
        self._reg_flags = x86.UC_X86_REG_RFLAGS if mode == "ia32e" else x86.UC_X86_REG_EFLAGS

        self._run = _RunState()
        self._uc.hook_add(UC_HOOK_INTR, self._on_intr)
        self._uc.hook_add(UC_HOOK_MEM_READ, self._on_read)
        self._uc.hook_add(UC_HOOK_MEM_WRITE, self._on_write)
        self._uc.hook_add(UC_HOOK_MEM_UNMAPPED, self._on_unmapped)
        self._scratch_ctx = self._uc.context_save()
        self._vmem_translate = uclib.uc_vmem_translate
        self._vmem_translate.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint64,
            ctypes.c_uint32,
            ctypes.POINTER(ctypes.c_uint64),
        ]
        self._vmem_translate.restype = ctypes.c_int

        self._build_harness()
        ctx0 = self._boot_cpl0()
        self._ctx = {0: ctx0, 3: self._boot_cpl3(ctx0)}
        self._check_clean(self._ctx[0])
        self._check_clean(self._ctx[3])
        self._calibrate()

    # ------------------------------------------------------------------ public API

    def load(self, image: bytes) -> None:
        """Write the test image into physical memory [0, len(image))."""
        if len(image) > self.phys_size:
            raise ValueError(f"load: image of {len(image):#x} bytes exceeds {self.phys_size:#x}")
        self._uc.mem_write(0, bytes(image))

    def read_phys(self, addr: int, size: int) -> bytes:
        """Read Unicorn's physical memory (A/D bits as the real instructions left them)."""
        return bytes(self._uc.mem_read(addr, size))

    def write_phys(self, addr: int, data: bytes) -> None:
        """Write Unicorn's physical memory (for tests that must resynchronise an entry)."""
        self._uc.mem_write(addr, bytes(data))

    def access(
        self,
        *,
        cr3: int,
        vaddr: int,
        access: str,
        cpl: int,
        wp: bool,
        nxe: bool,
        smep: bool,
        smap: bool,
        ac: bool,
        pse: bool,
    ) -> OracleResult:
        """Make one access with a real instruction at ``cpl``; A/D updates stay in memory."""
        if access not in _ACCESS_PROT:
            raise ValueError(f"access: access {access!r} not in 'r', 'w', 'x'")
        if cpl not in (0, 3):
            raise ValueError(f"access: cpl {cpl} not in (0, 3)")
        vaddr = self._check_va(vaddr)
        target = vaddr
        if access == "x" and vaddr & 0xFFF == 0:
            target = vaddr + 1  # pitfall 2: never stop at a page-aligned address
        self.accesses += 1

        self._uc.context_restore(self._ctx[cpl])
        self._write_controls(cr3=cr3, wp=wp, nxe=nxe, smep=smep, smap=smap, pse=pse)
        self._uc.reg_write(self._reg_flags, _RFLAGS_FIXED | (_RFLAGS_AC if ac else 0))
        self._uc.reg_write(self._reg_bx, target)
        self._uc.reg_write(x86.UC_X86_REG_EAX, 0xA5)  # a write stores 0xA5 (and is undone)
        code = self.harness_va + (_VA_KCODE if cpl == 0 else _VA_UCODE)
        offset = {"r": _OFF_READ, "w": _OFF_WRITE, "x": _OFF_EXEC}[access]
        begin = code + offset
        until = target if access == "x" else begin + _INSN_LEN

        undo = self._link(cr3)
        try:
            run = self._emulate(begin, until)
            return self._result(run, access, vaddr, target)
        finally:
            for addr, old in reversed(undo):
                self._uc.mem_write(addr, old)

    # ------------------------------------------------------------------ one access

    def _check_va(self, vaddr: int) -> int:
        """Refuse addresses the harness owns; wrap nothing silently."""
        limit = 1 << 64 if self.mode == "ia32e" else 1 << 32
        if not 0 <= vaddr < limit:
            raise ValueError(f"access: vaddr {vaddr:#x} out of range for mode {self.mode}")
        first, last = self.reserved_va
        if first <= vaddr <= last:
            raise ValueError(f"access: vaddr {vaddr:#x} lies in the harness range {first:#x}-")
        return vaddr

    def _write_controls(
        self, *, cr3: int, wp: bool, nxe: bool, smep: bool, smap: bool, pse: bool
    ) -> None:
        """Write CR4, EFER, CR3 and CR0 in that order: CR4 first, since the CPU model refuses CR4
        bits it lacks, and CR0 (with PG) last."""
        cr4 = (_CR4_SMEP if smep else 0) | (_CR4_SMAP if smap else 0)
        efer = _EFER_NXE if nxe else 0
        if pse:
            cr4 |= _CR4_PSE  # only 32-bit paging looks at it
        if self.mode == "ia32e":
            cr4 |= _CR4_PAE
            efer |= _EFER_LME | _EFER_LMA
        elif self.mode == "pae":
            cr4 |= _CR4_PAE
        self._uc.reg_write(x86.UC_X86_REG_CR4, cr4)
        self._uc.msr_write(_EFER_MSR, efer)
        self._uc.reg_write(x86.UC_X86_REG_CR3, cr3)
        self._uc.reg_write(x86.UC_X86_REG_CR0, _CR0_PE | _CR0_PG | (_CR0_WP if wp else 0))

    def _read_entry(self, addr: int) -> int:
        raw = self._uc.mem_read(addr, self.entry_size)
        return int.from_bytes(raw, "little")

    def _link(self, cr3: int) -> list[tuple[int, bytes]]:
        """Link the harness pages at the reserved slot; return (address, old bytes) to undo."""
        undo: list[tuple[int, bytes]] = []

        def put(addr: int, value: int) -> None:
            if not 0 <= addr < self.phys_size:
                raise ValueError(f"_link: table entry {addr:#x} outside test RAM (cr3={cr3:#x})")
            undo.append((addr, bytes(self._uc.mem_read(addr, self.entry_size))))
            self._uc.mem_write(addr, value.to_bytes(self.entry_size, "little"))

        pt = HARNESS_PHYS + _PT * 0x1000
        if self.mode == "ia32e":
            put((cr3 & _ADDR_MASK_40) + 511 * 8, HARNESS_PHYS + _L2 * 0x1000 | _P | _RW | _US)
        elif self.mode == "32":
            put((cr3 & 0xFFFF_F000) + 1023 * 4, pt | _P | _RW | _US)
        else:
            pdpte_addr = (cr3 & 0xFFFF_FFE0) + 3 * 8
            if not 0 <= pdpte_addr < self.phys_size:
                raise ValueError(f"_link: PDPT {pdpte_addr:#x} outside test RAM")
            pdpte = self._read_entry(pdpte_addr)
            if not pdpte & _P:
                put(pdpte_addr, HARNESS_PHYS + _L2 * 0x1000 | _P)
            elif pdpte & _PAE_PDPTE_RESERVED:
                raise ValueError(
                    f"_link: PDPTE[3]={pdpte:#x} has reserved bits (deviation pae-pdpte-reserved)"
                )
            else:
                put((pdpte & _ADDR_MASK_40) + 511 * 8, pt | _P | _RW | _US)
        return undo

    def _emulate(self, begin: int, until: int) -> _RunState:
        """Flush the TLB and run from ``begin`` to ``until``; return what the hooks saw."""
        run = self._run = _RunState(armed=True)
        self._uc.ctl(ucc.UC_CTL_TLB_FLUSH, ucc.UC_CTL_IO_WRITE)
        try:
            self._uc.emu_start(begin, until)
        except UcError as exc:
            if exc.errno not in (
                ucc.UC_ERR_READ_UNMAPPED,
                ucc.UC_ERR_WRITE_UNMAPPED,
                ucc.UC_ERR_FETCH_UNMAPPED,
            ) or (run.unmapped_paddr is None):
                raise
        finally:
            run.armed = False
        if run.write_paddr is not None and run.write_old is not None:
            self._uc.mem_write(run.write_paddr, run.write_old)  # only A/D may change
        return run

    def _result(self, run: _RunState, access: str, vaddr: int, target: int) -> OracleResult:
        """Turn what the hooks saw into an OracleResult for ``vaddr``."""
        if run.intno is not None:
            if run.intno == 14:
                cr2 = run.cr2
                if cr2 == target:
                    cr2 = vaddr  # the exact relation: we jumped to target, in vaddr's page
                return OracleResult(False, None, 14, run.error_code, cr2)
            if run.intno == 13:
                return OracleResult(False, None, 13, run.error_code, None)
            raise RuntimeError(
                f"_result: unexpected exception {run.intno} (error code {run.error_code})"
            )
        probed = self._probe(target, access)
        if run.unmapped_paddr is not None:
            paddr = run.unmapped_paddr
        elif access == "x":
            paddr = probed
        else:
            paddr = run.read_paddr if access == "r" else run.write_paddr
            if paddr != probed:  # two exact methods must agree
                raise RuntimeError(
                    f"_result: {access} {vaddr:#x}: hook saw {paddr}, probe {probed}"
                )
        if paddr is None:
            raise RuntimeError(f"_result: access {access} to {vaddr:#x} left no physical address")
        paddr -= target - vaddr
        first, last = self.reserved_phys
        if first <= paddr <= last:
            raise ValueError(f"_result: {vaddr:#x} maps harness frame {paddr:#x}")
        return OracleResult(True, paddr, None, None, None)

    def _probe(self, vaddr: int, access: str) -> int | None:
        """uc_vmem_translate: after a successful access this is a TLB hit and walks nothing."""
        out = ctypes.c_uint64()
        err = self._vmem_translate(self._uc._uch, vaddr, _ACCESS_PROT[access], ctypes.byref(out))
        return out.value if err == ucc.UC_ERR_OK else None

    # ------------------------------------------------------------------ hooks

    def _on_intr(self, uc: Uc, intno: int, _user: object) -> None:
        run = self._run
        if run.intno is None:
            run.intno = intno
            cr2_reg = x86.UC_X86_REG_CR2
            run.cr2 = uc.reg_read(cr2_reg)
            run.error_code = self._error_code()
        uc.emu_stop()

    def _on_read(
        self, uc: Uc, _acc: int, paddr: int, _size: int, _value: int, _user: object
    ) -> None:
        if self._run.armed and self._run.read_paddr is None:
            self._run.read_paddr = paddr

    def _on_write(
        self, uc: Uc, _acc: int, paddr: int, size: int, _value: int, _user: object
    ) -> None:
        run = self._run
        if run.armed and run.write_paddr is None:
            run.write_paddr = paddr
            try:
                run.write_old = bytes(uc.mem_read(paddr, size))
            except UcError:
                run.write_old = None  # outside RAM: nothing will be stored

    def _on_unmapped(
        self, uc: Uc, _acc: int, paddr: int, _size: int, _value: int, _user: object
    ) -> bool:
        if self._run.armed and self._run.unmapped_paddr is None:
            self._run.unmapped_paddr = paddr
        return False

    def _error_code(self) -> int:
        """CPUX86State.error_code, read from a fresh context blob (no register exposes it)."""
        return self._blob_i32(ERROR_CODE_OFFSET_FROM_END)

    def _blob_i32(self, offset_from_end: int) -> int:
        ctx = self._scratch_ctx
        self._uc.context_update(ctx)
        base = ctx.context.value
        assert base is not None
        return ctypes.c_int32.from_address(base + ctx.size - offset_from_end).value

    # ------------------------------------------------------------------ construction

    def _build_harness(self) -> None:
        """Write the harness frames: its own root (used at boot), PT, GDT, code, stacks."""
        h = HARNESS_PHYS

        def frame(i: int) -> int:
            return h + i * 0x1000

        def entry(value: int) -> bytes:
            return value.to_bytes(self.entry_size, "little")

        uc = self._uc
        uc.mem_write(h, bytes(_N_HARNESS_FRAMES * 0x1000))
        pt_slot = frame(_PT) | _P | _RW | _US
        if self.mode == "ia32e":
            uc.mem_write(frame(_ROOT) + 511 * 8, entry(frame(_L2) | _P | _RW | _US))
            uc.mem_write(frame(_L2), entry(frame(_L3) | _P | _RW | _US))
            uc.mem_write(frame(_L3), entry(pt_slot))
        elif self.mode == "pae":
            uc.mem_write(frame(_ROOT) + 3 * 8, entry(frame(_L2) | _P))
            uc.mem_write(frame(_L2) + 511 * 8, entry(pt_slot))
        else:
            uc.mem_write(frame(_ROOT) + 1023 * 4, entry(pt_slot))
        leaves = [
            (_GDT, _P | _RW | _A | _D),
            (_KCODE, _P | _A),
            (_KSTACK, _P | _RW | _A | _D),
            (_UCODE, _P | _US | _A),
            (_USTACK, _P | _RW | _US | _A | _D),
        ]
        for i, (f, flags) in enumerate(leaves):
            uc.mem_write(frame(_PT) + i * self.entry_size, entry(frame(f) | flags))
        uc.mem_write(frame(_GDT), _gdt(self.mode))
        uc.mem_write(frame(_KCODE), _code_page(self.mode, kernel=True))
        uc.mem_write(frame(_UCODE), _code_page(self.mode, kernel=False))

    def _boot_cpl0(self) -> object:
        """Turn paging on with the harness root, load the GDT and data segments; save at CPL0."""
        uc = self._uc
        self._write_controls(
            cr3=HARNESS_PHYS, wp=True, nxe=False, smep=False, smap=False, pse=False
        )
        uc.reg_write(x86.UC_X86_REG_GDTR, (0, self.harness_va + _VA_GDT, 5 * 8 - 1, 0))
        uc.reg_write(self._reg_sp, self.harness_va + _VA_KSTACK + 0xF00)
        uc.reg_write(self._reg_flags, _RFLAGS_FIXED)
        begin = self.harness_va + _VA_KCODE + _OFF_SETUP
        self._boot_run(begin, begin + _SETUP_LEN)
        # SMAP/SMEP must be settable on this CPU model, or the oracle would silently lie.
        self._write_controls(cr3=HARNESS_PHYS, wp=True, nxe=True, smep=True, smap=True, pse=False)
        got = uc.reg_read(x86.UC_X86_REG_CR4)
        if not (got & _CR4_SMAP and got & _CR4_SMEP):
            raise OracleCalibrationError(f"_boot_cpl0: CR4 {got:#x} refused SMEP/SMAP")
        self._write_controls(
            cr3=HARNESS_PHYS, wp=True, nxe=False, smep=False, smap=False, pse=False
        )
        return uc.context_save()

    def _boot_cpl3(self, ctx0: object) -> object:
        """From the CPL0 context, iret to the user code page with a real iretq/iretd."""
        uc = self._uc
        uc.context_restore(ctx0)
        va = self.harness_va
        user_ip, user_sp = va + _VA_UCODE + _OFF_LANDING, va + _VA_USTACK + 0xF00
        frame_vals = (user_ip, _SEL_UCODE, _RFLAGS_FIXED, user_sp, _SEL_UDATA)
        fmt = "<5Q" if self.mode == "ia32e" else "<5I"
        frame = struct.pack(fmt, *frame_vals)
        kstack_top = va + _VA_KSTACK + 0xE00
        uc.mem_write(HARNESS_PHYS + _KSTACK * 0x1000 + 0xE00, frame)
        uc.reg_write(self._reg_sp, kstack_top)
        self._boot_run(va + _VA_KCODE + _OFF_TO_USER, user_ip)
        cs = uc.reg_read(x86.UC_X86_REG_CS)
        if cs & 3 != 3:
            raise OracleCalibrationError(f"_boot_cpl3: iret left CS={cs:#x}, not CPL3")
        return uc.context_save()

    def _boot_run(self, begin: int, until: int) -> None:
        self._run = _RunState(armed=False)
        self._uc.ctl(ucc.UC_CTL_TLB_FLUSH, ucc.UC_CTL_IO_WRITE)
        self._uc.emu_start(begin, until)
        if self._run.intno is not None:
            raise OracleCalibrationError(
                f"_boot_run: exception {self._run.intno} (code {self._run.error_code:#x}) "
                f"running the harness at {begin:#x}"
            )
        ip = self._uc.reg_read(self._reg_ip)
        if ip != until:
            raise OracleCalibrationError(f"_boot_run: stopped at {ip:#x}, not {until:#x}")

    def _check_clean(self, ctx: object) -> None:
        self._uc.context_restore(ctx)
        old = self._blob_i32(OLD_EXCEPTION_OFFSET_FROM_END)
        if old != -1:
            raise OracleCalibrationError(f"_check_clean: old_exception is {old}, not -1")

    def _calibrate(self) -> None:
        """Two #GP(selector) faults must put their selectors at the expected blob offset."""
        blobs = []
        for selector in CALIBRATION_SELECTORS:
            self._uc.context_restore(self._ctx[0])
            # Junk above AX keeps RAX itself from matching in the blob search below.
            self._uc.reg_write(x86.UC_X86_REG_EAX, 0x5A5A_0000 | selector)
            begin = self.harness_va + _VA_KCODE + _OFF_LOAD_DS
            run = self._emulate(begin, begin + _INSN_LEN)
            if run.intno != 13:
                raise OracleCalibrationError(
                    f"_calibrate: mov ds, {selector:#x} gave exception {run.intno}, not #GP"
                )
            ctx = self._scratch_ctx
            blobs.append(ctypes.string_at(ctx.context.value, ctx.size))
            if run.error_code != selector:
                raise OracleCalibrationError(
                    f"_calibrate: error code {run.error_code} at offset -"
                    f"{ERROR_CODE_OFFSET_FROM_END}, expected {selector:#x}"
                )
        size = len(blobs[0])
        found = [
            size - off
            for off in range(0, size - 3)
            if all(
                int.from_bytes(blob[off : off + 4], "little", signed=True) == sel
                for blob, sel in zip(blobs, CALIBRATION_SELECTORS, strict=True)
            )
        ]
        if found != [ERROR_CODE_OFFSET_FROM_END]:
            raise OracleCalibrationError(
                f"_calibrate: selectors found at offsets-from-end {found}, "
                f"expected [{ERROR_CODE_OFFSET_FROM_END}]"
            )
        self.calibrated_offset = found[0]
