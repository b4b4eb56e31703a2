"""Running thread bodies on real stacks, through the MMU.

``thread_main`` is a thread's entry: it runs the body's ops and, when they end, returns from the
entry function -- which in Zephyr aborts the thread (a self-abort). Stack ops move the CPU's stack
pointer and write through the TLB and the walker, word by word as PUSH does (one interleaving point
per page touched), so an overflow really faults -- or, where nothing protects the stack, really
writes into whatever lies below it. A fault goes to ``fault.page_fault``.

Kernel calls made by a user thread are system calls: they run at CPL 0 on the thread's
privilege-elevation stack (``arch.psp``, in the original stack object; see
``lifecycle.z_x86_userspace_prepare_thread_psp``), and return to the user stack. The body's own
memory accesses run at the thread's CPL.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from mmusim.hw import PROLOGUES, STACK_GUARD, Trap, checked_prologue_fails, probe_addresses
from mmusim.kernel import abort, domain, fault, lifecycle, mm, sched
from mmusim.kernel.engine import Region
from mmusim.kernel.facts import fact
from mmusim.kernel.geometry import PAGE
from mmusim.kernel.policy import StackEscape
from mmusim.kernel.routines import LOCAL, KernelAssert, Point, pages_of, touches_pages
from mmusim.kernel.thread import K_USER, KThread, Op, ThreadState

if TYPE_CHECKING:
    from mmusim.kernel.boot import Kernel

Routine = Generator[Any, None, Any]
FILL = 0x5A  # what pushes write: recognisable in a memory dump

_KERNEL_OPS = {
    "sleep", "yield", "abort_self", "abort", "create", "start", "join", "suspend", "resume",
    "k_mem_map", "k_mem_unmap", "record", "return", "exhaust", "unmap_all",
    "k_mem_map_phys_bare", "k_mem_unmap_phys_bare", "serve", "mem_domain_init",
    "mem_domain_add_partition", "mem_domain_remove_partition", "mem_domain_add_thread",
}  # fmt: skip


def thread_main(k: Kernel, t: KThread) -> Routine:
    yield Point(t.name, "thread entry", res=LOCAL)
    c = k.cpu
    c.running_on = t
    sched.arch_first_entry(k, t)
    if t.options & K_USER:  # k_thread_user_mode_enter: drop to ring 3 on the thread stack
        yield from domain.z_x86_current_stack_perms(k, t)  # from z_x86_userspace_enter
        c = k.cpu
        t.cpl = 3
        c.hw.cpl = 3
    yield from run_ops(k, t, t.body)
    if not t.exit_reason:
        t.exit_reason = "returned"
    c = k.cpu
    if c.hw.cpl == 3:  # in user mode, z_thread_entry's k_thread_abort is a system call
        c.hw.sp = t.psp
    c.hw.cpl = 0
    yield from abort.k_thread_abort(k, t)  # z_thread_entry: k_thread_abort(_current)
    raise AssertionError("thread_main: a dead thread ran again")  # pragma: no cover


def run_ops(k: Kernel, t: KThread, ops: tuple[Op, ...]) -> Routine:
    # Index loops, not iterators: the position then lives in a local (``i``, ``rep``), which the
    # explorer's fingerprint reads; an iterator's position is invisible to it.
    for i in range(len(ops)):
        op = ops[i]
        if op.kind == "repeat":
            for _rep in range(op.n):
                yield from run_ops(k, t, op.body)
            continue
        if op.kind == "return":
            return
        if op.kind in k.extension_ops:  # an op of a layer above (mmusim.runtime)
            yield from k.extension_ops[op.kind](k, t, op)
        elif op.kind in _KERNEL_OPS:
            c = k.cpu
            saved, c.hw.cpl = c.hw.cpl, 0
            user_sp = None
            if saved == 3:  # a system call: z_x86_syscall_entry_stub switches to arch.psp
                user_sp, c.hw.sp = c.hw.sp, t.psp
                # DEVIATION(syscall-entry-frame): the entry stub's saves of the user context onto arch.psp (x86_64 syscall stub; ia32 int 0x80 via _main_tss.esp0) are not written; only what the kernel pushes there later (arch_switch) is
            yield from kernel_op(k, t, op)
            c = k.cpu  # (it may have migrated)
            c.hw.cpl = saved
            if user_sp is not None:  # sysret/iret: back on the user stack
                c.hw.sp = user_sp
        else:
            yield from memory_op(k, t, op)


def note_escape(k: Kernel, t: KThread, lo: int, hi: int, what: str) -> None:
    """Before a stack access of ``[lo, hi)``: if it leaves ``t``'s stack object by less than a page,
    record a ``StackEscape`` (judged by ``invariants.check_stack_escapes``) and keep it in
    ``t.escape`` until the access completes (``access_done``) or faults (``fault.page_fault``)."""
    elo, ehi = k.policy.extent(k, t)
    if lo < elo and hi > elo - PAGE:
        e = StackEscape(t.name, "overflow", max(lo, elo - PAGE), what)
    elif hi > ehi and lo < ehi + PAGE:
        e = StackEscape(t.name, "underflow", max(lo, ehi), what)
    else:
        t.escape = None
        return
    k.escapes.append(e)
    t.escape = e


def access_done(t: KThread) -> None:
    """The access went through: an escape it made was silent."""
    if t.escape is not None:
        t.escape.outcome = "silent"
        t.escape = None


def memory_op(k: Kernel, t: KThread, op: Op) -> Routine:
    """An op that touches memory at the thread's CPL; a fault ends in ``fault.page_fault``,
    unless ``Kernel.mem_page_fault`` resolves it first (as ``k_mem_page_fault`` does in
    ``z_x86_page_fault_handler``): then the op is run again from where it began, with the stack
    pointer it began with -- its accesses before the fault are repeated, writing the same bytes.
    After every yield the CPU is looked up again (``k.cpu``): an interrupt that suspends the
    thread (``k_thread_suspend`` from another CPU) may resume it on another CPU."""
    while True:
        sp = k.cpu.hw.sp
        trap = yield from _memory_access(k, t, op)
        if trap is None:
            return
        if k.mem_page_fault is not None and (yield from k.mem_page_fault(k, t, trap)):
            if t.escape is not None:  # not an escape: the access is retried
                k.escapes.remove(t.escape)
                t.escape = None
            k.cpu.hw.sp = sp
            continue
        yield from fault.page_fault(k, t, trap, k.cpu.hw.sp)
        return


def _memory_access(k: Kernel, t: KThread, op: Op) -> Generator[Any, None, Trap | None]:
    """The accesses of ``op``; returns the #PF that stopped them, or None."""
    hw = k.cpu.hw
    t.escape = None
    try:
        if op.kind == "push":
            yield from push(k, t, op.n)
        elif op.kind == "pop":
            yield Point(
                t.name, f"pop {op.n} bytes", res=touches_pages(pages_of(hw.sp, hw.sp + op.n))
            )
            hw = k.cpu.hw
            note_escape(k, t, hw.sp, hw.sp + op.n, f"pop {op.n} bytes at {hw.sp:#x}")
            hw.pop(op.n)
            access_done(t)
        elif op.kind == "call":
            yield from call(k, t, op)
        elif op.kind in ("touch", "write"):
            addr = address(k, t, op)
            yield Point(
                t.name,
                f"write a word at {addr:#x}",
                res=touches_pages(pages_of(addr, addr + k.word)),
            )
            if op.kind == "touch":  # relative to the thread's own stack
                note_escape(k, t, addr, addr + k.word, f"write a word at {addr:#x}")
            k.cpu.hw.write(addr, bytes([FILL]) * k.word)
            access_done(t)
        elif op.kind == "read":
            addr = address(k, t, op)
            yield Point(
                t.name,
                f"read a word at {addr:#x}",
                res=touches_pages(pages_of(addr, addr + k.word)),
            )
            k.cpu.hw.read(addr, k.word)
        else:
            raise KernelAssert(f"run_ops: unknown op {op.kind!r} (line {op.line})")
    except Trap as trap:
        if trap.vector != 14:
            raise KernelAssert(f"{t.name}: {trap}") from trap
        return trap
    return None


def push(k: Kernel, t: KThread, n: int) -> Routine:
    """PUSH ``n`` bytes, a word at a time; one interleaving point per page."""
    hw = k.cpu.hw
    word = k.word
    left = n
    while left > 0:
        room = (hw.sp - 1) % PAGE + 1  # bytes left in the page below SP
        chunk = min(left, room)
        yield Point(
            t.name,
            f"push {chunk} bytes below {hw.sp:#x}",
            res=touches_pages(pages_of(hw.sp - chunk, hw.sp)),
        )
        hw = k.cpu.hw
        note_escape(k, t, hw.sp - chunk, hw.sp, f"push {chunk} bytes below {hw.sp:#x}")
        hw.push(bytes([FILL]) * word)  # the first word decides this page (CR2 = SP - word)
        if chunk > word:
            hw.push(bytes([FILL]) * (chunk - word))
        access_done(t)
        left -= chunk


def call(k: Kernel, t: KThread, op: Op) -> Routine:
    """CALL a function (``Op`` ``call``) compiled with ``op.prologue`` (or the kernel's build
    default): ``_call`` runs it ``op.depth`` deep."""
    prologue = op.prologue or ("probed" if op.probe else k.prologue)
    if prologue not in PROLOGUES:
        raise KernelAssert(f"call: prologue {prologue!r}: allowed {', '.join(PROLOGUES)}")
    yield from _call(k, t, op, prologue, 1)


def _call(k: Kernel, t: KThread, op: Op, prologue: str, level: int) -> Routine:
    """Push the return address; a checked prologue compares against the stack's guard and calls
    ``morestack`` (the runtime's, ``Kernel.stack_runtime``; without one the check fails as a
    fatal stack overflow); then the frame (``_frame``); then ``leave; ret`` to the stack pointer
    the call began with -- relocated if a runtime moved the stack meanwhile."""
    entry_sp = k.cpu.hw.sp
    mark = len(t.stack_moves)
    yield from push(k, t, k.word)
    sp = k.cpu.hw.sp
    frame = op.n
    if op.where == "bottom":  # a frame reaching op.offset bytes past the stack's bottom
        frame = max(sp - current_stack(k, t)[0] + op.offset, 0)
    if prologue == "checked" and needs_morestack(k, t, sp, frame):
        yield Point(t.name, f"prologue: SP {sp:#x} less a {frame}-byte frame is at or below "
                    "stackguard0: call morestack")  # fmt: skip
        rt = k.stack_runtime
        grown = rt is not None and (
            yield from rt.morestack(k, t, frame, lambda: _frame(k, t, op, prologue, frame, level))
        )
        if not grown:
            yield from fault.stack_check_fail(
                k, t, f"a {frame}-byte frame at SP {sp:#x} fails the stack check, and nothing "
                "can grow this stack"
            )  # fmt: skip
    else:
        yield from _frame(k, t, op, prologue, frame, level)
    k.cpu.hw.sp = relocated(t, entry_sp, mark)


def _frame(k: Kernel, t: KThread, op: Op, prologue: str, frame: int, level: int) -> Routine:
    """``sub sp, frame`` (probing each page on the way down when ``prologue`` is "probed":
    -fstack-clash-protection), write the lowest local, then the function's body: the next level
    of the recursion, or ``op.body``."""
    hw = k.cpu.hw
    top = hw.sp
    if prologue == "probed":
        for probe in probe_addresses(top, frame, PAGE):
            hw.sp = probe
            yield Point(t.name, f"probe {probe:#x}", res=touches_pages(pages_of(probe, probe + 8)))
            hw = k.cpu.hw
            note_escape(k, t, probe, probe + k.word, f"probe {probe:#x}")
            hw.write(probe, bytes(k.word))
            access_done(t)
    hw.sp = top - frame
    yield Point(
        t.name,
        f"write the lowest local at {hw.sp:#x}",
        res=touches_pages(pages_of(hw.sp, hw.sp + k.word)),
    )
    hw = k.cpu.hw
    note_escape(k, t, hw.sp, hw.sp + k.word, f"write the lowest local at {hw.sp:#x}")
    hw.write(hw.sp, bytes([FILL]) * k.word)
    access_done(t)
    if level < op.depth:
        yield from _call(k, t, op, prologue, level + 1)
    else:
        yield from run_ops(k, t, op.body)


def current_stack(k: Kernel, t: KThread) -> tuple[int, int]:
    """``[lo, hi)`` of the stack ``t`` runs on: the runtime's (a coroutine's, a goroutine's, a
    stack of the process's own), else the thread's stack buffer (``stack_info.start`` and
    ``size``: what its frames may use; the object around it may reserve more, such as the legacy
    guard page)."""
    rt = k.stack_runtime
    got = rt.current_stack(k, t) if rt is not None else None
    if got is not None:
        return got
    info = t.stack_info
    return info.start, info.start + info.size


def needs_morestack(k: Kernel, t: KThread, sp: int, frame: int) -> bool:
    """A checked prologue's verdict: the runtime's for its stacks; on a thread's own stack the
    guard is the buffer's bottom + StackGuard (as Go sets ``stackguard0 = lo + StackGuard``)."""
    rt = k.stack_runtime
    verdict = rt.needs_morestack(k, t, sp, frame) if rt is not None else None
    if verdict is not None:
        return verdict
    return checked_prologue_fails(sp, frame, current_stack(k, t)[0] + STACK_GUARD)


def relocated(t: KThread, sp: int, mark: int = 0) -> int:
    """A stack pointer saved before the stack moves ``t.stack_moves[mark:]``, where it is now
    (Go's ``adjustframe`` adjusts saved frame pointers the same way)."""
    for lo, hi, delta in t.stack_moves[mark:]:
        if lo <= sp <= hi:
            sp += delta
    return sp


def address(k: Kernel, t: KThread, op: Op) -> int:
    info = t.stack_info
    base = info.mapped.addr if info.mapped.addr is not None else (t.stack.addr if t.stack else 0)
    if op.kind == "write" or op.kind == "read":
        if op.target:
            r = k.mappings.get(op.target)
            if r is None:
                raise KernelAssert(f"{t.name}: no mapping named {op.target!r} (line {op.line})")
            return r.addr + op.offset
        if op.label:  # at a recorded fact: its last value (e.g. a mapping's address, now unmapped)
            values = k.facts.get(op.label)
            if not values or not isinstance(values[-1], int):
                raise KernelAssert(f"{t.name}: fact {op.label!r} holds no address (line {op.line})")
            return int(values[-1]) + op.offset
        return op.addr
    where = op.where or "start"
    bases = {
        "start": info.start,
        "end": info.start + info.size,
        "sp": k.cpu.hw.sp,
        "mapped": base,
        "front_guard": base - PAGE // 2,
        "rear_guard": base + (info.mapped.sz or (t.stack.obj_len if t.stack else 0)) + PAGE // 2,
    }
    if where in ("bottom", "top"):  # of the stack the thread runs on now (current_stack)
        lo, hi = current_stack(k, t)
        return (lo if where == "bottom" else hi) + op.offset
    if where not in bases:
        raise KernelAssert(f"{t.name}: touch where={where!r}: allowed {sorted(bases)}")
    return bases[where] + op.offset


# DEVIATION(kernel-frames): kernel calls use no stack of their own: only the context switch's
# accesses (sched.z_x86_switch, sched.arch_swap) touch the thread's stack inside the kernel.
def kernel_op(k: Kernel, t: KThread, op: Op) -> Routine:
    kind = op.kind
    if kind == "sleep":
        yield from sched.k_sleep(k, op.n)
    elif kind == "yield":
        yield from sched.k_yield(k)
    elif kind == "abort_self":
        t.exit_reason = "aborted itself"
        yield from abort.k_thread_abort(k, t)
    elif kind == "abort":
        yield from abort.k_thread_abort(k, k.thread(op.target))
    elif kind == "create":
        target = k.threads.get(op.target)
        if target is None:
            target = k.add_thread(KThread(op.target))
        stack = k.stacks.get(op.stack)
        if stack is None:
            raise KernelAssert(f"k_thread_create: no stack object named {op.stack!r}")
        body = k.bodies.get(op.label, ())
        yield from lifecycle.k_thread_create(
            k, target, stack, thread_main, body, options=K_USER if op.user else 0, prio=op.prio,
            delay=op.n,
        )  # fmt: skip
    elif kind == "start":
        yield from lifecycle.k_thread_start(k, k.thread(op.target))
    # DEVIATION(join-forever-only): k_thread_join is modelled with K_FOREVER only (no timeout).
    elif kind == "join":
        yield from lifecycle.k_thread_join(k, k.thread(op.target))
    elif kind == "suspend":
        yield from lifecycle.k_thread_suspend(k, k.thread(op.target))
    elif kind == "resume":
        yield from lifecycle.k_thread_resume(k, k.thread(op.target))
    elif kind == "k_mem_map":
        flags = mm.K_MEM_PERM_RW | (mm.K_MEM_PERM_USER if op.user else 0)
        addr = yield from mm.k_mem_map(k, op.n, flags, op.target)
        if addr is None:
            k.mappings.pop(op.target, None)
            k.record(f"mapping.{op.target}", None)
        else:
            k.mappings[op.target] = k.regions[addr]
    elif kind == "k_mem_unmap":
        r = take_mapping(k, op.target, "k_mem_unmap")
        yield from mm.k_mem_unmap(k, r.addr, r.size)
    elif kind == "exhaust":  # k_mem_map(n) until it returns NULL; record how many succeeded
        count = 0
        while True:
            name = f"{op.target}{count}"
            addr = yield from mm.k_mem_map(k, op.n, mm.K_MEM_PERM_RW, name)
            if addr is None:
                break
            k.mappings[name] = k.regions[addr]
            count += 1
        k.record(op.label or op.target, count)
    elif kind == "unmap_all":  # k_mem_unmap every mapping whose name starts with target
        for name in [n for n in k.mappings if n.startswith(op.target)]:
            r = k.mappings.pop(name)
            yield from mm.k_mem_unmap(k, r.addr, r.size)
    elif kind == "k_mem_map_phys_bare":  # map n bytes of stack object op.stack, no guards
        obj = k.stacks.get(op.stack)
        if obj is None:
            raise KernelAssert(f"k_mem_map_phys_bare: no stack object named {op.stack!r}")
        addr = yield from mm.k_mem_map_phys_bare(
            k, obj.addr - k.virt_offset, op.n, mm.K_MEM_PERM_RW, op.target
        )
        k.mappings[op.target] = k.regions[addr]
    elif kind == "k_mem_unmap_phys_bare":
        r = take_mapping(k, op.target, "k_mem_unmap_phys_bare")
        yield from mm.k_mem_unmap_phys_bare(k, r.addr, r.size)
    # DEVIATION(harness-mailbox): `serve` and Kernel.post are the test harness's driver (like a
    # k_msgq and its ISR), not a Zephyr API.
    elif kind == "serve":
        yield from serve(k, t)
    elif kind.startswith("mem_domain_"):
        yield from domain_op(k, op)
    elif kind == "record":
        yield Point(t.name, f"record {op.target}")
        k.record(op.label or op.target, fact(k, op.target))
    else:  # pragma: no cover - _KERNEL_OPS and this chain list the same kinds
        raise KernelAssert(f"run_ops: unknown kernel op {kind!r}")
    if t.dead:
        raise AssertionError(f"{t.name} ran after it died")  # pragma: no cover


def domain_op(k: Kernel, op: Op) -> Routine:
    """The ``mem_domain_*`` ops: ``k_mem_domain_init``, ``k_mem_domain_add_partition``,
    ``k_mem_domain_remove_partition``, ``k_mem_domain_add_thread`` (``mmusim.kernel.domain``)."""
    fn = "k_" + op.kind
    if k.md is None:
        raise KernelAssert(f"{fn}: memory domains need CONFIG_USERSPACE")
    parts = []
    for name in op.parts:
        part = k.md.partitions.get(name)
        if part is None:
            raise KernelAssert(f"{fn}: no partition named {name!r} (line {op.line})")
        parts.append(part)
    if op.kind == "mem_domain_init":
        yield from domain.k_mem_domain_init(k, op.domain, parts)
    elif op.kind == "mem_domain_add_partition":
        yield from domain.k_mem_domain_add_partition(k, op.domain, parts[0])
    elif op.kind == "mem_domain_remove_partition":
        yield from domain.k_mem_domain_remove_partition(k, op.domain, parts[0])
    elif op.kind == "mem_domain_add_thread":
        yield from domain.k_mem_domain_add_thread(k, op.domain, k.thread(op.target))
    else:  # pragma: no cover
        raise KernelAssert(f"run_ops: unknown kernel op {op.kind!r}")


def take_mapping(k: Kernel, name: str, fn: str) -> Region:
    """Forget the body's mapping ``name`` and return it, for ``fn`` to unmap."""
    r = k.mappings.pop(name, None)
    if r is None:
        raise KernelAssert(f"{fn}: no mapping named {name!r}")
    return r


def serve(k: Kernel, t: KThread) -> Routine:
    """The ``serve`` op: take kernel calls from this thread's mailbox (``Kernel.post``) and make
    them, one at a time, until a ``return`` request; with the mailbox empty, pend on it (as on a
    ``k_msgq_get(K_FOREVER)``). The harness wakes it with a mailbox interrupt (``sched``).
    Requests run with the thread's CPL, like the body's own ops (kernel calls at CPL 0)."""
    box = k.mailboxes.setdefault(t.name, deque())
    while True:
        yield from k.k_spin_lock(k.sched_lock, "serve")
        if not box:
            t.state |= ThreadState.PENDING
            t.mbox_wait = True
            yield from sched.z_swap(k, "serve")
            continue
        yield from k.k_spin_unlock(k.sched_lock, "serve")
        req = box.popleft()
        if req.op.kind == "return":
            return
        if req.guard is not None and not req.guard(k):
            continue
        c = k.cpu
        saved, c.hw.cpl = c.hw.cpl, t.cpl
        yield from run_ops(k, t, (req.op,))
        k.cpu.hw.cpl = saved
