"""Readable page walks: one line per level, decoded the way the SDM's tables name the bits.

Bit 7 is PS in a PDE/PDPTE and PAT in a PTE; D and G exist only in leaves; bit 12 is PAT in a large
leaf; a PAE PDPTE has only P (and PWT/PCD). The decoder follows the level, so a student sees what
each bit means *there*. Think of OSTEP's paging homework answers, for real x86 formats.
"""

from __future__ import annotations

from typing import Any

from mmusim.hw import (
    MODE_IA32E,
    PF_ERROR_BIT_NAMES,
    Access,
    ControlState,
    GeneralProtection,
    PageFault,
    PfErrorCode,
    PhysMem,
    PteFlags,
    Result,
    Translation,
    error_code_names,
)
from mmusim.hw.paging import PAT_LARGE, LevelPlan

_ACCESS_WORD = {Access.READ: "read", Access.WRITE: "write", Access.EXEC: "execute"}

# What each error-code bit means when set and when clear (None: nothing to say when clear).
_MEANING: dict[PfErrorCode, tuple[str, str | None]] = {
    PfErrorCode.P: ("protection violation", "not present"),
    PfErrorCode.W: ("write", "read or fetch"),
    PfErrorCode.US: ("user-mode access", "supervisor-mode access"),
    PfErrorCode.RSVD: ("reserved bit set", None),
    PfErrorCode.ID: ("instruction fetch", None),
}
_ERROR_BITS = tuple((bit, short, *_MEANING[bit]) for bit, short in PF_ERROR_BIT_NAMES)


def explain_error_code(code: int) -> list[str]:
    """One line per error-code bit, set or clear, saying what it means for this fault."""
    lines = []
    for bit, short, if_set, if_clear in _ERROR_BITS:
        if code & bit:
            lines.append(f"{short:>4} = 1  {if_set}")
        elif if_clear is not None:
            lines.append(f"{short:>4} = 0  {if_clear}")
    return lines


def decode_entry(lp: LevelPlan, value: int, leaf: bool) -> str:
    """The flags of one entry, named as its level defines them."""
    if not value & PteFlags.P:
        return "not present; other bits ignored"
    if lp.level.register:
        names = ["P"] + [n for b, n in ((PteFlags.PWT, "PWT"), (PteFlags.PCD, "PCD")) if value & b]
        return " ".join(names)
    names = ["P"]
    names.append("RW" if value & PteFlags.RW else "RO")
    names.append("U" if value & PteFlags.US else "S")
    for bit, name in ((PteFlags.PWT, "PWT"), (PteFlags.PCD, "PCD"), (PteFlags.A, "A")):
        if value & bit:
            names.append(name)
    large = leaf and lp.large_size and value & PteFlags.PS
    if leaf:
        if value & PteFlags.D:
            names.append("D")
        if large:
            names.append("PS")
            if value & PAT_LARGE:
                names.append("PAT")
        elif value & PteFlags.PS:
            names.append("PAT")  # bit 7 of a PTE is PAT, not PS
        if value & PteFlags.G:
            names.append("G")
    elif value & PteFlags.PS and lp.table_rsvd & PteFlags.PS:
        names.append("PS(reserved!)")
    if value & PteFlags.NX:
        names.append("XD")
    return " ".join(names)


def _rights(user: bool, writable: bool, nx: bool, has_nx: bool) -> str:
    return "/".join(
        ("user" if user else "supervisor", "RW" if writable else "RO")
        + ((("NX" if nx else "X"),) if has_nx else ())
    )


def describe_control(ctl: ControlState, access: Access, cpl: int) -> str:
    bits = [f"CR3={ctl.cr3:#x}", f"CR0.WP={int(ctl.wp)}"]
    if ctl.mode.name == "32":
        bits.append(f"CR4.PSE={int(ctl.pse)}")
    else:
        bits.append(f"EFER.NXE={int(ctl.nxe)}")
    bits += [f"CR4.SMEP={int(ctl.smep)}", f"CR4.SMAP={int(ctl.smap)}", f"EFLAGS.AC={int(ctl.ac)}"]
    return f"{ctl.mode.title}; {_ACCESS_WORD[access]} at CPL {cpl}; " + " ".join(bits)


def _va_split(ctl: ControlState, va: int, res: Result) -> str:
    plan = ctl.plan
    parts = []
    stop = None
    if isinstance(res, Translation):
        stop = res.entries[-1][0]
    for lp in plan.levels:
        parts.append(f"{lp.level.name}[{(va >> lp.shift) & lp.index_mask}]")
        if lp.level.name == stop:
            break
    size = res.page_size if isinstance(res, Translation) else 4096
    return " ".join(parts) + f" + offset {va & (size - 1):#x}"


def render_walk(
    mem_after: PhysMem, ctl: ControlState, va: int, access: Access, cpl: int, res: Result
) -> str:
    """The text of ``mmusim walk``: the control state, one line per level, then the outcome."""
    width = 18 if ctl.mode is MODE_IA32E else 10
    lines = [describe_control(ctl, access, cpl), f"linear address {va:#0{width}x}"]
    if isinstance(res, GeneralProtection):
        lines.append(f"=> #GP(0), vector 13: {res.reason}; no walk, CR2 and A/D bits untouched")
        return "\n".join(lines)
    lines[-1] += " = " + _va_split(ctl, va, res)
    plans = {lp.level.name: lp for lp in ctl.plan.levels}
    user = writable = True
    nx = False
    esize = ctl.mode.entry_size
    for i, (name, ea, value) in enumerate(res.entries):
        lp = plans[name]
        last = i == len(res.entries) - 1
        leaf = name == ctl.plan.levels[-1].level.name or bool(lp.large_size and value & PteFlags.PS)
        now = mem_after.read_u64(ea) if esize == 8 else mem_after.read_u32(ea)
        setbits = [n for b, n in ((PteFlags.A, "A"), (PteFlags.D, "D")) if (now & ~value) & b]
        line = f"  {lp.level.entry_name:<6} @ {ea:#010x} = {value:#0{2 + 2 * esize}x}  "
        line += f"[{decode_entry(lp, value, leaf)}]"
        if not value & PteFlags.P:
            lines.append(line)
            break
        if not lp.level.register:
            user, writable = (
                user and bool(value & PteFlags.US),
                writable and bool(value & PteFlags.RW),
            )
            nx = nx or bool(value & PteFlags.NX and ctl.nxe)
        if last and isinstance(res, PageFault) and res.reason == "reserved-bit":
            lines.append(line)
            break
        if leaf:
            target = f"frame {res.frame:#x}" if isinstance(res, Translation) else "leaf"
        else:
            target = f"table {value & lp.addr_mask:#x}"
        line += f" -> {target}"
        if not lp.level.register:
            line += f"; rights so far {_rights(user, writable, nx, ctl.mode.has_nx)}"
        if setbits:
            line += f"; walk set {'+'.join(setbits)}"
        lines.append(line)
    if isinstance(res, Translation):
        size = res.page_size
        unit = (
            f"{size >> 30}G" if size >= 1 << 30 else f"{size >> 20}M" if size >= 1 << 20 else "4K"
        )
        lines.append(f"=> physical address {res.paddr:#x} ({unit} page)")
        return "\n".join(lines)
    lines.append(
        f"=> #PF, vector 14: {_fault_reason(res)} at {res.entry_addr:#x} ({res.level} level); "
        f"CR2={res.cr2:#x}; error code {res.error_code:#x} ({error_code_names(res.error_code)})"
    )
    lines += ["     " + text for text in explain_error_code(res.error_code)]
    return "\n".join(lines)


def _fault_reason(f: PageFault) -> str:
    return {
        "not-present": "entry not present",
        "reserved-bit": "reserved bit set",
        "protection": "the combined rights refuse this access",
    }[f.reason]


def result_json(va: int, res: Result) -> dict[str, Any]:
    """The ``--json`` object of one access (integers, as the CLI documents)."""
    if isinstance(res, Translation):
        return {"vaddr": va, "ok": True, "paddr": res.paddr, "page_size": res.page_size}
    if isinstance(res, PageFault):
        return {
            "vaddr": va,
            "ok": False,
            "vector": 14,
            "error_code": res.error_code,
            "cr2": res.cr2,
        }
    return {"vaddr": va, "ok": False, "vector": 13, "error_code": 0}


def result_json_line(va: int, res: Result) -> str:
    """``json.dumps(result_json(va, res))``, written out: the line ``mmusim translate --json``
    prints for one access, built without a dict or the encoder (several times cheaper). The
    values are plain ints, which JSON writes as Python does."""
    if isinstance(res, Translation):
        return f'{{"vaddr": {va}, "ok": true, "paddr": {res.paddr}, "page_size": {res.page_size}}}'
    if isinstance(res, PageFault):
        return (
            f'{{"vaddr": {va}, "ok": false, "vector": 14, "error_code": {res.error_code}, '
            f'"cr2": {res.cr2}}}'
        )
    return f'{{"vaddr": {va}, "ok": false, "vector": 13, "error_code": 0}}'


def result_line(va: int, res: Result) -> str:
    """One human line per access, for ``mmusim translate``."""
    if isinstance(res, Translation):
        return f"{va:#x} -> {res.paddr:#x} (page size {res.page_size:#x})"
    if isinstance(res, PageFault):
        return (
            f"{va:#x} -> #PF error code {res.error_code:#x} ({error_code_names(res.error_code)}), "
            f"CR2={res.cr2:#x}, {res.reason} at {res.level}"
        )
    return f"{va:#x} -> #GP(0): {res.reason}"
