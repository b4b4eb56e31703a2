"""The op kinds a process adds to thread bodies (``Kernel.extension_ops``), each a routine
``(process, thread, op)`` reading its arguments with ``Op.arg``; ``Process.attach`` registers
``OPS`` (docs/runtime.md lists them)."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from mmusim.kernel import KernelAssert, KThread, Op, Point
from mmusim.kernel.body import run_ops
from mmusim.runtime.defs import PAGE, SIGSEGV, MapFlag, MmError, Prot
from mmusim.runtime.sigstate import (
    CORO_YIELD,
    MINSIGSTKSZ,
    SA_ONSTACK,
    SA_SIGINFO,
    AltStack,
    Coroutine,
    JmpBuf,
    SigAction,
    SigLongJmp,
)

if TYPE_CHECKING:
    from mmusim.runtime.process import Process

__all__ = ["OPS"]

Routine = Generator[Any, None, Any]

# -- the ops -------------------------------------------------------------------------------------


def _prot(names: Any) -> Prot:
    prot = Prot.NONE
    for name in names or ():
        prot |= {"read": Prot.READ, "write": Prot.WRITE, "exec": Prot.EXEC}[name]
    return prot


def _flags(names: Any) -> MapFlag:
    flags = MapFlag.PRIVATE | MapFlag.ANONYMOUS
    for name in names or ():
        flags |= {"fixed": MapFlag.FIXED, "growsdown": MapFlag.GROWSDOWN,
                  "noreserve": MapFlag.NORESERVE}[name]  # fmt: skip
    return flags


def _where(p: Process, o: Op) -> int:
    """The address an op names: ``mapping`` (+ ``offset``) or ``addr``."""
    name = o.arg("mapping")
    if name:
        if name not in p.mappings:
            raise KernelAssert(f"{o.kind}: no mapping named {name!r} (line {o.line})")
        return p.mappings[name][0] + int(o.arg("offset", 0))
    return int(o.arg("addr", 0))


def _mm(p: Process, t: KThread, o: Op, call: Any) -> Routine:
    """Run an address-space call as one step; a refusal (errno) is recorded, not raised."""
    yield Point(t.name, f"{o.kind} (line {o.line})")
    try:
        result = call()
    except MmError as e:
        p.k.record(f"{o.kind}.errno", e.errno)
        p.k.record("errno", e.errno)
        result = None
    p.k.record("areas", len(p.space))  # how many areas (VMAs) the process has now
    return result


def op_mmap(p: Process, t: KThread, o: Op) -> Routine:
    name = o.arg("name")
    fixed = o.arg("mapping") or o.arg("addr") is not None
    at = _where(p, o) if fixed else None
    length = int(o.arg("bytes"))
    addr = yield from _mm(p, t, o, lambda: p.space.mmap(
        length, _prot(o.arg("prot")), _flags(o.arg("flags")), at, name or "",
        guard_size=int(o.arg("guard", 0)),
    ))  # fmt: skip
    if addr is not None and name:
        p.mappings[name] = (addr, length)
    p.k.record(name or "mmap", addr)


def op_munmap(p: Process, t: KThread, o: Op) -> Routine:
    addr = _where(p, o)
    yield from _mm(p, t, o, lambda: p.space.munmap(addr, int(o.arg("bytes"))))


def op_mprotect(p: Process, t: KThread, o: Op) -> Routine:
    addr = _where(p, o)
    length, prot = int(o.arg("bytes")), _prot(o.arg("prot"))
    yield from _mm(p, t, o, lambda: p.space.mprotect(addr, length, prot))


def op_madvise_guard(p: Process, t: KThread, o: Op) -> Routine:
    addr, length = _where(p, o), int(o.arg("bytes"))
    if o.arg("remove"):
        yield from _mm(p, t, o, lambda: p.space.madvise_guard_remove(addr, length))
    else:
        yield from _mm(p, t, o, lambda: p.space.madvise_guard_install(addr, length))


def op_sigaction(p: Process, t: KThread, o: Op) -> Routine:
    yield Point(t.name, f"sigaction(SIGSEGV, {o.arg('handler')})")
    flags = SA_SIGINFO | (SA_ONSTACK if o.arg("onstack") else 0)
    p.sigactions[SIGSEGV] = SigAction(str(o.arg("handler")), flags)


def op_sigaltstack(p: Process, t: KThread, o: Op) -> Routine:
    """``sigaltstack(&ss, NULL)`` on ``mapping`` (its whole length, or ``bytes``); ENOMEM below
    MINSIGSTKSZ, EPERM while on the alternate stack (sigaltstack(2))."""
    yield Point(t.name, f"sigaltstack (line {o.line})")
    st = p.thread(t)
    name = str(o.arg("mapping"))
    if name not in p.mappings:
        raise KernelAssert(f"sigaltstack: no mapping named {name!r} (line {o.line})")
    addr, length = p.mappings[name]
    size = int(o.arg("bytes", length))
    if size < MINSIGSTKSZ:
        p.k.record("errno", "ENOMEM")
        return
    if st.altstack is not None and st.altstack.holds(p.k.cpu.hw.sp):
        p.k.record("errno", "EPERM")
        return
    st.altstack = AltStack(addr, size)


def op_sigsetjmp(p: Process, t: KThread, o: Op) -> Routine:
    """``if (sigsetjmp(env, 1) == 0) { do } else { on_jump }``."""
    st = p.thread(t)
    env = JmpBuf(p.k.cpu.hw.sp, st.in_handler, st.coroutine)
    st.jmpbufs.append(env)
    try:
        yield from run_ops(p.k, t, o.body)
    except SigLongJmp as jump:
        if jump.env is not env:
            raise
        st.in_handler = env.in_handler  # the saved signal mask: SIGSEGV unblocked
        st.coroutine = env.coroutine
        p.k.cpu.hw.sp = env.sp
        yield Point(t.name, "sigsetjmp returns 1")
        yield from run_ops(p.k, t, tuple(o.arg("on_jump", ())))
    finally:
        st.jmpbufs.remove(env)


def op_siglongjmp(p: Process, t: KThread, o: Op) -> Routine:
    st = p.thread(t)
    if not st.jmpbufs:
        raise KernelAssert(f"siglongjmp: no sigsetjmp to return to (line {o.line})")
    yield Point(t.name, "siglongjmp")
    raise SigLongJmp(st.jmpbufs[-1])


def op_on_stack(p: Process, t: KThread, o: Op) -> Routine:
    """Run ``do`` with the stack pointer at the top of ``mapping`` (as a thread started with
    ``pthread_attr_setstack``), or ``offset`` bytes into it, then return to the thread's own
    stack."""
    name = str(o.arg("mapping"))
    if name not in p.mappings:
        raise KernelAssert(f"on_stack: no mapping named {name!r} (line {o.line})")
    addr, length = p.mappings[name]
    hw = p.k.cpu.hw
    saved = hw.sp
    st = p.thread(t)
    if st.home_sp is None:
        st.home_sp = saved
    sp = addr + int(o.arg("offset", length))
    yield Point(t.name, f"switch to stack {name} at {sp:#x}")
    p.k.cpu.hw.sp = sp
    outer, st.stack = st.stack, (addr, addr + length)
    try:
        yield from run_ops(p.k, t, o.body)
    finally:
        st.stack = outer
    p.k.cpu.hw.sp = saved


def op_move_sp(p: Process, t: KThread, o: Op) -> Routine:
    """``sub rsp, N`` / ``add rsp, N``: move the stack pointer by ``by`` bytes without touching
    memory (a frame whose locals are not all written; a loop's pointer stepping over a buffer)."""
    by = int(o.arg("by"))
    hw = p.k.cpu.hw
    yield Point(t.name, f"move the stack pointer from {hw.sp:#x} by {by}")
    p.k.cpu.hw.sp += by


def op_coro_create(p: Process, t: KThread, o: Op) -> Routine:
    """A coroutine on ``mapping``: its stack is the mapping less a ``guard`` of pages at the
    bottom (0: none), the body ``body``."""
    name, stack = str(o.arg("name")), str(o.arg("mapping"))
    if stack not in p.mappings:
        raise KernelAssert(f"coro_create: no mapping named {stack!r} (line {o.line})")
    addr, length = p.mappings[stack]
    guard = int(o.arg("guard", 0)) * PAGE
    body = p.k.bodies.get(str(o.arg("body")))
    if body is None:
        raise KernelAssert(f"coro_create: no body named {o.arg('body')!r} (line {o.line})")
    yield Point(t.name, f"coro_create {name}")
    p.coroutines[name] = Coroutine(
        name, body, addr + guard, addr + length, (addr, addr + guard) if guard else None,
        p.k.cpu.id, sp=addr + length,
    )  # fmt: skip


def op_coro_switch(p: Process, t: KThread, o: Op) -> Routine:
    """Run coroutine ``name`` on its stack until it yields back or ends."""
    co = p.coroutines.get(str(o.arg("name")))
    if co is None:
        raise KernelAssert(f"coro_switch: no coroutine named {o.arg('name')!r} (line {o.line})")
    if co.done:
        raise KernelAssert(f"coro_switch: coroutine {co.name!r} has ended (line {o.line})")
    st = p.thread(t)
    caller, saved = st.coroutine, p.k.cpu.hw.sp
    if st.home_sp is None:
        st.home_sp = saved
    yield Point(t.name, f"switch to coroutine {co.name}")
    st.coroutine = co
    p.k.cpu.hw.sp = co.sp
    if co.gen is None:
        co.gen = run_ops(p.k, t, co.body)
    sent: Any = None
    try:
        while True:
            try:
                out = co.gen.send(sent)
            except StopIteration:
                co.done = True
                break
            if out is CORO_YIELD:
                break
            sent = yield out
    finally:
        co.sp = p.k.cpu.hw.sp
        st.coroutine = caller
        p.k.cpu.hw.sp = saved


def op_coro_yield(p: Process, t: KThread, o: Op) -> Routine:
    if p.thread(t).coroutine is None:
        raise KernelAssert(f"coro_yield: not in a coroutine (line {o.line})")
    yield CORO_YIELD


def op_go(p: Process, t: KThread, o: Op) -> Routine:
    """Run ``do`` as goroutine ``name`` on a fresh Go stack of the process's Go policy (its
    starting size, or ``bytes``): its calls' checked prologues grow the stack (the process's
    ``morestack``). When it ends, its stack goes back to the heap; the growth counters are
    recorded (``go.splits``, ``go.copies``, ``go.bytes_copied``)."""
    rt = p.go
    name = str(o.arg("name"))
    if name in rt.gs:
        raise KernelAssert(f"go: goroutine {name!r} is running (line {o.line})")
    g = rt.newg(name, o.arg("bytes"))
    st = p.thread(t)
    hw = p.k.cpu.hw
    saved = hw.sp
    if st.home_sp is None:
        st.home_sp = saved
    yield Point(t.name, f"go {name}: a {g.hi - g.lo}-byte stack at {g.lo:#x}")
    outer, st.g = st.g, g
    p.k.cpu.hw.sp = g.hi
    try:
        yield from run_ops(p.k, t, o.body)
    finally:
        st.g = outer
        p.k.record("go.splits", g.splits)
        p.k.record("go.copies", g.copies)
        p.k.record("go.bytes_copied", g.bytes_copied)
        if name in rt.gs:
            rt.freeg(g)
    p.k.cpu.hw.sp = saved


def op_go_pointer(p: Process, t: KThread, o: Op) -> Routine:
    """Take the address of a local: push a local word, then a word holding its address,
    registered as pointer ``name`` of the running goroutine (a slot of its stack map: a copy
    relocates it)."""
    g = _goroutine(p, t, o)
    local = p.k.cpu.hw.sp - 8
    yield Point(t.name, f"a local at {local:#x}; pointer {o.arg('name')} = its address")
    p.go.mem.write(local, bytes(8))
    p.k.cpu.hw.sp = p.go.record_pointer(g, str(o.arg("name")), local)


def op_go_deref(p: Process, t: KThread, o: Op) -> Routine:
    """Read through pointer ``name``: its value and whether it is stale (outside the goroutine's
    live stack: a copy forgot it) are recorded as ``go.pointer`` and ``go.stale``."""
    g = _goroutine(p, t, o)
    name = str(o.arg("name"))
    if name not in g.ptrs:
        raise KernelAssert(f"go_deref: no pointer named {name!r} (line {o.line})")
    yield Point(t.name, f"read through pointer {name}")
    value, stale = p.go.deref(g, name)
    p.k.record("go.pointer", value)
    p.k.record("go.stale", stale)
    if stale:
        p.k.printk(f"runtime: {t.name}: pointer {name} = {value:#x} is outside {g.name}'s stack")


def _goroutine(p: Process, t: KThread, o: Op) -> Any:
    g = p.thread(t).g
    if g is None:
        raise KernelAssert(f"{o.kind}: not in a goroutine (line {o.line})")
    return g


def op_classify_fault(p: Process, t: KThread, o: Op) -> Routine:
    """In a SIGSEGV handler, RethinkDB's ``fatal_signal_handler``: if the thread's current
    coroutine's guard page holds ``si_addr`` (``is_coroutine_stack_overflow``), report a
    callstack overflow, else a plain segmentation fault; recorded as fact ``report``."""
    yield Point(t.name, "is_coroutine_stack_overflow(si_addr)")
    addr = p.k.facts.get("sigsegv.si_addr", [None])[-1]
    co = p.thread(t).coroutine
    if addr is not None and co is not None and co.guard and co.guard[0] <= addr < co.guard[1]:
        report = f"Callstack overflow from a coroutine initialized on CPU {co.cpu}"
        p.k.record("report.coroutine", co.name)
    else:
        report = f"Segmentation fault from reading the address {addr:#x}."
    p.k.record("report", report)
    p.k.printk(f"runtime: {t.name}: {report}")


OPS: dict[str, Any] = {
    "mmap": op_mmap,
    "munmap": op_munmap,
    "mprotect": op_mprotect,
    "madvise_guard": op_madvise_guard,
    "sigaction": op_sigaction,
    "sigaltstack": op_sigaltstack,
    "sigsetjmp": op_sigsetjmp,
    "siglongjmp": op_siglongjmp,
    "on_stack": op_on_stack,
    "move_sp": op_move_sp,
    "coro_create": op_coro_create,
    "coro_switch": op_coro_switch,
    "coro_yield": op_coro_yield,
    "classify_fault": op_classify_fault,
    "go": op_go,
    "go_pointer": op_go_pointer,
    "go_deref": op_go_deref,
}
"""The op kinds a process adds to thread bodies (``Kernel.extension_ops``); each reads its
arguments with ``Op.arg``."""
