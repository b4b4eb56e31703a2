"""A user-space process on the simulated kernel: its address space, signals and coroutines.

``Process.attach(kernel, flavour=...)`` gives a booted kernel one process: an ``AddressSpace`` of
the flavour (Linux, nanos, Haiku) in the user window ``[USER_LO, USER_HI)``, whose pages go into
the kernel's page tables through a ``KernelPager``; the process's signal actions, each thread's
alternate signal stack, and coroutines. It plugs into the kernel through its two hooks:

* ``Kernel.mem_page_fault`` -- a page fault of a body's access inside the user window is the
  process's (Linux ``do_user_addr_fault``): ``AddressSpace.fault`` commits the page or grows a
  growsdown area and the access is retried, or the fault becomes a SIGSEGV (``deliver_sigsegv``).
  A fault outside the window goes on to Zephyr's handler, as before;
* ``Kernel.extension_ops`` -- the op kinds of ``OPS`` (mmap, mprotect, sigaction, sigaltstack,
  sigsetjmp/siglongjmp, coroutines, running on a stack of the process's own).

Signal delivery follows Linux x86 (``arch/x86/kernel/signal.c``: ``get_sigframe``,
``setup_rt_frame``): the frame goes on the alternate stack if the action has ``SA_ONSTACK``, the
thread has one and is not already on it, else below the interrupted stack pointer less the
128-byte red zone (x86_64). The frame is written through the MMU: on an overflowed stack with no
alternate stack the write faults, and the thread is killed (``force_sigsegv``). SIGSEGV is
blocked while its handler runs (no ``SA_NODEFER``), so a fault inside the handler kills too
(``force_sig_info_to_task`` unblocks and resets a blocked synchronous signal). A handler ends in
``siglongjmp`` (back to the op ``sigsetjmp`` with its stack pointer; ``sigsetjmp(env, 1)``
restores the signal mask) or returns (``rt_sigreturn``: the access is retried, and faults again).
A new thread inherits the actions (they are per process) but has no alternate stack
(``pthread_create(3)``: "the new thread does not inherit the creating thread's alternate signal
stack").

Coroutines (as RethinkDB's ``coro_t``): several stacks per thread; ``coro_switch NAME`` runs the
coroutine on its own stack until it yields back (``coro_yield``) or ends, and the thread's
current coroutine is what a SIGSEGV handler asks to attribute a fault.

Goroutines (``go`` op, ``mmusim.runtime.gostack``): a body run on a Go stack of the process's Go
policy (``go_policy``; default ``GoCopying()``), carved from its Go heap. The process is the
kernel's ``stack_runtime``: a checked prologue on a goroutine's stack is judged against the
goroutine's ``stackguard0`` and, when it fails, the process's ``morestack`` splits (segmented)
or copies (copying) the stack and runs the rest of the call there; a copy is recorded in
``KThread.stack_moves`` so the calls below return to the moved stack. A stack that would exceed
``max_stack`` is Go's ``throw("stack overflow")``: fatal to the program (``go_throw``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from mmusim.hw import Trap
from mmusim.kernel import KernelAssert, KThread, Op, Point
from mmusim.kernel.abort import k_thread_abort
from mmusim.kernel.body import run_ops
from mmusim.runtime.areas import AddressSpace
from mmusim.runtime.defs import (
    LINUX,
    PAGE,
    SEGV_ACCERR,
    SIGSEGV,
    FaultOutcome,
    MmFlavour,
)
from mmusim.runtime.gostack import G, GoCopying, GoRuntime, GoStackOverflow, GoStackPolicy
from mmusim.runtime.kpager import KernelPager
from mmusim.runtime.ops import OPS
from mmusim.runtime.sigstate import (
    FRAME_FILL,
    RED_ZONE,
    SIGFRAME_BYTES,
    AltStack,
    Coroutine,
    SigAction,
    ThreadRt,
)

if TYPE_CHECKING:
    from mmusim.kernel import Kernel

__all__ = [
    "OPS",
    "USER_HI",
    "USER_LO",
    "AltStack",
    "Coroutine",
    "Process",
    "SigAction",
]

Routine = Generator[Any, None, Any]

# The process's window of the kernel's address space: below the 4 GiB line in every paging mode,
# far above the kernel image and its virtual window.
USER_LO = 0x4000_0000
USER_HI = 0x8000_0000


class Process:
    """One process on a kernel (module docstring). Build it with ``Process.attach``."""

    def __init__(
        self,
        k: Kernel,
        flavour: MmFlavour,
        rlimit_stack: int | None,
        go_policy: GoStackPolicy | None = None,
    ) -> None:
        self.k = k
        self.pager = KernelPager(k, (USER_LO, USER_HI))
        self.space = AddressSpace(self.pager, USER_LO, USER_HI, flavour=flavour,
                                  rlimit_stack=rlimit_stack)  # fmt: skip
        self.sigactions: dict[int, SigAction] = {}
        self.threads: dict[str, ThreadRt] = {}
        self.coroutines: dict[str, Coroutine] = {}
        self.mappings: dict[str, tuple[int, int]] = {}  # name -> (address, length)
        self.killed: str | None = None  # why the process was killed, if it was
        self.go_policy: GoStackPolicy = go_policy if go_policy is not None else GoCopying()
        self._go: GoRuntime | None = None
        self._checked: tuple[int, int] | None = None  # check_invariants' mark of the last pass

    @classmethod
    def attach(
        cls,
        k: Kernel,
        *,
        flavour: MmFlavour = LINUX,
        rlimit_stack: int | None = None,
        go_policy: GoStackPolicy | None = None,
    ) -> Process:
        """Give ``k`` a process: install its page-fault hook, its ops and its stack runtime;
        ``go_policy``: how its goroutines' stacks grow (default ``GoCopying()``)."""
        if k.mem_page_fault is not None:
            raise KernelAssert("Process.attach: the kernel already has a page-fault hook")
        p = cls(k, flavour, rlimit_stack, go_policy)
        k.mem_page_fault = p.page_fault
        k.extension_checks.append(p.check_invariants)
        k.extension_state.append(p.state)
        k.stack_runtime = p
        for kind, fn in OPS.items():
            k.extension_ops[kind] = _bind(p, fn)
        return p

    @staticmethod
    def of(k: Kernel) -> Process | None:
        """The process attached to ``k`` (its page-fault hook's owner), or None."""
        owner = getattr(k.mem_page_fault, "__self__", None)
        return owner if isinstance(owner, Process) else None

    def thread(self, t: KThread) -> ThreadRt:
        return self.threads.setdefault(t.name, ThreadRt())

    def state(self, k: Kernel) -> tuple[Any, list[Generator[Any, Any, Any]]]:
        """What the explorer must tell apart (``Kernel.extension_state``): the areas with their
        committed pages, the signal actions, each thread's alternate stack, handler depth,
        sigsetjmp buffers and coroutine, the coroutines (and their suspended routines)."""
        areas = tuple((a.start, a.end, int(a.prot), a.growsdown, tuple(a.committed),
                       tuple(a.guards), tuple(sorted(a.page_prot.items()))) for a in self.space)  # fmt: skip
        threads = tuple(
            (name, (st.altstack.sp, st.altstack.size) if st.altstack else None, st.in_handler,
             tuple(j.sp for j in st.jmpbufs), st.coroutine.name if st.coroutine else None,
             (st.g.name, tuple(st.g.segments), tuple(st.g.ptrs.items())) if st.g else None)
            for name, st in sorted(self.threads.items())
        )  # fmt: skip
        coros = tuple((c.name, c.sp, c.done) for c in self.coroutines.values())
        data = (areas, tuple(sorted((n, a.handler, a.flags) for n, a in self.sigactions.items())),
                threads, coros, tuple(sorted(self.mappings.items())), self.killed)  # fmt: skip
        return data, [c.gen for c in self.coroutines.values() if c.gen is not None]

    def check_invariants(self, k: Kernel) -> list[str]:
        """The process's invariants as the kernel's checks report them (``Kernel.extension_checks``):
        ``_check`` (the address space shallow: committed pages mapped as their protection says,
        frames conserved, areas disjoint, gaps kept), run when the address space changed since
        the last check (a PTE write or an area more or less)."""
        mark = (self.pager.pte_writes, len(self.space))
        if mark == self._checked:
            return []
        try:
            self._check(deep=False)
        except AssertionError as e:
            return [f"runtime: {e}"]
        self._checked = mark
        return []

    def _check(self, deep: bool = True) -> None:
        """The address space's invariants, and each thread's state consistent."""
        self.space._check(deep)
        for name, st in self.threads.items():
            assert st.in_handler >= 0, f"{name}: negative handler depth"
            if st.altstack is not None:
                a = st.altstack
                assert a.sp >= USER_LO and a.sp + a.size <= USER_HI, f"{name}: altstack outside"

    # -- page faults ----------------------------------------------------------------------

    def page_fault(self, k: Kernel, t: KThread, trap: Trap) -> Generator[Any, None, bool]:
        """``Kernel.mem_page_fault``: the process's faults (CR2 in its window) are resolved by
        the address space or become a SIGSEGV; others go on to Zephyr's handler (False)."""
        addr = trap.cr2
        if addr is None or not USER_LO <= addr < USER_HI:
            return False
        write = bool(trap.error_code & 0x2)
        fetch = bool(trap.error_code & 0x10)
        outcome = self.space.fault(addr, write, fetch)
        yield Point(t.name, f"user fault at {addr:#x}: {outcome}")
        if outcome.resolved:
            return True
        return (yield from self.deliver_sigsegv(t, outcome))

    def deliver_sigsegv(self, t: KThread, why: FaultOutcome) -> Generator[Any, None, bool]:
        """Deliver SIGSEGV for ``why`` to ``t``: run the handler on the stack ``get_sigframe``
        picks. Returns True when the handler returns (the access is retried); kills the thread
        when there is no handler, when SIGSEGV is blocked (a fault inside its handler), or when
        the frame cannot be written; a ``siglongjmp`` leaves by ``SigLongJmp``."""
        k = self.k
        st = self.thread(t)
        code = "SEGV_ACCERR" if why.si_code == SEGV_ACCERR else "SEGV_MAPERR"
        k.record("sigsegv.si_addr", why.si_addr)
        k.record("sigsegv.si_code", code)
        k.record("sigsegv.reason", why.reason)
        sa = self.sigactions.get(SIGSEGV)
        if sa is None:
            yield from self.kill(
                t, f"SIGSEGV ({code}) at {why.si_addr:#x}, no handler: {why.reason}"
            )
        if st.in_handler:
            yield from self.kill(
                t,
                f"SIGSEGV ({code}) at {why.si_addr:#x} inside its own handler (SIGSEGV is "
                f"blocked there): {why.reason}",
            )
        assert sa is not None
        hw = k.cpu.hw
        interrupted = hw.sp
        alt = st.altstack
        use_alt = sa.onstack and alt is not None and not alt.holds(interrupted)
        if use_alt:
            assert alt is not None
            top, where = alt.sp + alt.size, "the alternate signal stack"
        else:
            top, where = interrupted - (RED_ZONE if k.word == 8 else 0), "the interrupted stack"
            if sa.onstack and alt is None:
                where += " (SA_ONSTACK, but this thread has no alternate stack)"
        frame = ((top - SIGFRAME_BYTES) & ~0xF) - k.word  # get_sigframe: aligned, then a slot
        k.record("sigsegv.stack", "alternate" if use_alt else "same")
        yield Point(t.name, f"setup_rt_frame at {frame:#x} on {where}")
        failed = self._write_frame(frame)
        if failed is not None:
            yield from self.kill(
                t,
                f"SIGSEGV ({code}) at {why.si_addr:#x} ({why.reason}), and its signal frame "
                f"could not be written at {failed.si_addr:#x} on {where}: {failed.reason} "
                "(force_sigsegv)",
            )
        handler = k.bodies.get(sa.handler)
        if handler is None:
            raise KernelAssert(f"sigaction: no body named {sa.handler!r}")
        st.in_handler += 1
        k.record("sigsegv.handler", sa.handler)
        hw = k.cpu.hw
        hw.sp = frame
        yield from run_ops(k, t, handler)
        # rt_sigreturn: back to the interrupted context; the faulting access runs again
        st.in_handler -= 1
        k.cpu.hw.sp = interrupted
        return True

    def _write_frame(self, frame: int) -> FaultOutcome | None:
        """Write the signal frame through the MMU, committing or growing pages the way a fault of
        the process would (Linux's ``copy_to_user`` faults are resolved the same way); the
        outcome that refused it, or None."""
        hw = self.k.cpu.hw
        for _ in range(SIGFRAME_BYTES // PAGE + 3):
            try:
                hw.write(frame, bytes([FRAME_FILL]) * SIGFRAME_BYTES)
                return None
            except Trap as trap:
                addr = trap.cr2 if trap.cr2 is not None else frame
                if not USER_LO <= addr < USER_HI:
                    return FaultOutcome("signal", addr, "outside the process", SIGSEGV, 1)
                outcome = self.space.fault(addr, True)
                if not outcome.resolved:
                    return outcome
        raise KernelAssert("setup_rt_frame: the frame kept faulting")  # pragma: no cover

    def kill(self, t: KThread, why: str) -> Routine:
        """The process is killed by SIGSEGV (its default action): ``t`` ends here, with ``why``
        in the console and the facts (``killed``)."""
        # DEVIATION(runtime-kill-thread): only the faulting thread ends; Linux ends every thread
        # of the process (do_group_exit). The kill is recorded as the process's.
        self.killed = why
        self.k.printk(f"runtime: {t.name}: killed by SIGSEGV: {why}")
        self.k.record("killed", why)
        t.exit_reason = "killed by SIGSEGV"
        yield from self._exit(t)

    # -- the stacks threads run on (Kernel.stack_runtime) -----------------------------------

    def current_stack(self, k: Kernel, t: KThread) -> tuple[int, int] | None:
        """The stack ``t`` runs on, if the process gave it one: its goroutine's (the current
        segment), its coroutine's, else the ``on_stack`` mapping's; None on its own stack."""
        st = self.threads.get(t.name)
        if st is None:
            return None
        if st.g is not None:
            return st.g.lo, st.g.hi
        if st.coroutine is not None:
            return st.coroutine.lo, st.coroutine.hi
        return st.stack

    def needs_morestack(self, k: Kernel, t: KThread, sp: int, frame: int) -> bool | None:
        """On a goroutine's stack, the Go runtime's prologue check (against its
        ``stackguard0``, as its policy builds it); elsewhere None: the kernel's check applies."""
        st = self.threads.get(t.name)
        if st is None or st.g is None:
            return None
        return self.go.needs_morestack(st.g, sp, frame)

    def morestack(
        self, k: Kernel, t: KThread, frame: int, callee: Callable[[], Routine]
    ) -> Generator[Any, None, bool]:
        """``runtime.morestack`` for a goroutine: grow its stack (a new segment, or a copy into
        one twice as big, ``GoRuntime.morestack``) and run ``callee`` there; after a split,
        return to the old segment (``lessstack``). False off a goroutine's stack: nothing grows
        it. A stack beyond ``max_stack`` is fatal (``go_throw``)."""
        st = self.threads.get(t.name)
        if st is None or st.g is None:
            return False
        g, rt = st.g, self.go
        try:
            growth = rt.morestack(g, k.cpu.hw.sp, frame)
        except GoStackOverflow as e:
            yield from self.go_throw(t, g, str(e))
            raise AssertionError("morestack: a thrown goroutine ran on") from e  # pragma: no cover
        k.record("go.growth", growth.kind)
        if growth.kind == "split":
            yield Point(t.name, f"morestack: {g.name} splits: a {growth.size}-byte segment at "
                        f"{growth.segment[0] if growth.segment else 0:#x}")  # fmt: skip
            k.cpu.hw.sp = growth.new_sp
            yield from callee()
            k.cpu.hw.sp = rt.lessstack(g, growth)
            return True
        assert growth.old is not None
        yield Point(t.name, f"morestack: {g.name}'s stack copied into {growth.size} bytes at "
                    f"{g.lo:#x} ({growth.old[1] - growth.old_sp} bytes used, moved by "
                    f"{growth.delta:+#x})")  # fmt: skip
        t.stack_moves.append((growth.old[0], growth.old[1], growth.delta))
        k.cpu.hw.sp = growth.new_sp
        yield from callee()
        return True

    # -- goroutines --------------------------------------------------------------------------

    @property
    def go(self) -> GoRuntime:
        """The process's Go runtime, made on first use (its heap is the first Go stack's)."""
        if self._go is None:
            self._go = GoRuntime(self.space, self.go_policy, KernelMem(self))
        return self._go

    def go_throw(self, t: KThread, g: G, message: str) -> Routine:
        """Go's ``throw``: the runtime prints the message and the goroutine's name, and the
        whole program exits (status 2). Here thread ``t`` ends with it."""
        # DEVIATION(runtime-kill-thread): as for a SIGSEGV kill, only this thread ends.
        for line in message.splitlines():
            self.k.printk(f"runtime: {t.name}: {line}")
        self.k.printk(f"runtime: {t.name}: goroutine {g.name} [running]")
        for key in ("splits", "copies", "bytes_copied"):
            self.k.record(f"go.{key}", getattr(g, key))
        self.k.record("go.fatal", message.splitlines()[-1])
        self.k.record("go.fatal.goroutine", g.name)
        self.killed = message.splitlines()[-1]
        t.exit_reason = "fatal error: stack overflow"
        yield from self._exit(t)

    def _exit(self, t: KThread) -> Routine:
        """End ``t`` for the process (``kill``, ``go_throw``): back to CPL 0 and the thread's own
        stack, where the kernel runs the exit, then ``k_thread_abort``; it never returns."""
        hw = self.k.cpu.hw
        hw.cpl = 0
        home = self.thread(t).home_sp
        if home is not None:
            hw.sp = home
        yield from k_thread_abort(self.k, t)
        raise AssertionError(f"{t.name}: a thread the process ended ran again")  # pragma: no cover

    # -- attribution -------------------------------------------------------------------------

    def guard_owner(self, addr: int) -> Coroutine | None:
        """The coroutine whose guard page holds ``addr``, if any."""
        for co in self.coroutines.values():
            if co.guard is not None and co.guard[0] <= addr < co.guard[1]:
                return co
        return None


class KernelMem:
    """Go stack memory as the running CPU sees it (``gostack.Mem``): reads and writes through
    the kernel's MMU, a demand fault resolved by the address space as a fault of the process
    would be (the Go heap's pages are committed when it is made, so none is expected)."""

    def __init__(self, p: Process) -> None:
        self.p = p

    def read(self, va: int, n: int) -> bytes:
        return bytes(self._retry(lambda: self.p.k.cpu.hw.read(va, n), va))

    def write(self, va: int, data: bytes) -> None:
        self._retry(lambda: self.p.k.cpu.hw.write(va, data), va, write=True)

    def _retry(self, access: Callable[[], Any], va: int, write: bool = False) -> Any:
        for _ in range(4):
            try:
                return access()
            except Trap as trap:
                addr = trap.cr2 if trap.cr2 is not None else va
                outcome = self.p.space.fault(addr, write)
                if not outcome.resolved:
                    raise KernelAssert(f"Go runtime: access at {addr:#x}: {outcome}") from trap
        raise KernelAssert(f"Go runtime: access at {va:#x} keeps faulting")  # pragma: no cover


def _bind(p: Process, fn: Any) -> Any:
    def op(k: Kernel, t: KThread, o: Op) -> Routine:
        return fn(p, t, o)  # type: ignore[no-any-return]

    op.__name__ = fn.__name__
    return op
