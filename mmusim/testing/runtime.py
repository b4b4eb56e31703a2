"""``RuntimeMachine``: a Hypothesis rule-based state machine over a runtime stack policy
(``mmusim.runtime.policies``), checking the policy's promise (``catches``) as it goes.

Most rules run on a bare machine, fast: an ``AddressSpace`` of the policy's flavour on
``HwPager`` page tables, two CPUs (user mode, one TLB each) whose accesses go through the MMU, a
#PF handed to ``AddressSpace.fault`` and the access retried. The rules:

* ``create`` a stack (``policy.create``; sizes clustered at page multiples), ``destroy`` one
  (``policy.destroy``; the next access to its top must trap: no stale TLB entry);
* ``touch`` inside a stack (a push or a probed frame): it must resolve into the stack's own
  memory -- never silently into another mapping. A growsdown stack may instead be refused (its
  growth stops at the guard gap of the mapping below, a SIGSEGV, which is safe);
* ``escape`` by less than a page below the stack (``"overflow"``) or above it (``"underflow"``):
  when the kind is in ``policy.catches`` the write must be refused with SIGSEGV and ``si_addr``
  in one of the stack's guards (``RtStack.guard_of``);
* ``big_frame``: a jump below the guard, by more than the guard -- never promised; the outcome
  is recorded as a Hypothesis ``event``;
* ``neighbour`` mappings interleaved (placed by the address space's own placement) and unmapped.

After every rule (``@invariant``): ``AddressSpace._check()`` and ``HwPager._check()`` (areas
well formed, committed pages = frames = present PTEs, no pending invalidation); the guard page of
every live stack next to the stack faults on a write, at both its ends; no two live stacks
overlap. ``teardown`` destroys everything and checks that every frame came back.

The signals part (``thread_overflow``) runs on the kernel, a ``Process`` attached: the process
installs a SIGSEGV handler ``SA_ONSTACK`` and an alternate stack for ``main``; ``main`` starts a
new thread that, if the machine's ``altstack_on_new_threads`` says so, installs its own alternate
stack, then runs on a stack the policy made and overflows it. The promise is RethinkDB's: the
overflow is reported by the handler (which ``siglongjmp`` s back), ``si_addr`` in the stack's
guard, the thread not killed. ``altstack_on_new_threads=False`` is the broken variant: handlers
are inherited by the new thread, the alternate stack is not, and the handler's frame cannot be
written on the overflowed stack.

Configure it with ``RuntimeMachine.configured(policy=...)``, which names the class by the call,
so a falsifying example prints as runnable code::

    from mmusim.runtime.policies import HaikuAreas
    RuntimeMachine.configured(policy=HaikuAreas(guard_present=True)).check()

Deviation: in the signals part the harness makes the policy's stack and the alternate stacks'
mappings with direct address-space calls before the kernel runs (as a ``pthread_attr_setstack``
caller would, earlier in the process); ``sigaction``, ``sigaltstack`` and the overflow are the
threads' own ops.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from hypothesis import event as _event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from mmusim.hw import MODE_IA32E, ControlState, Cpu, PhysMem, Tlb, Trap
from mmusim.kernel import K_FOREVER, Kernel, Op, StackObject
from mmusim.runtime.areas import AddressSpace
from mmusim.runtime.defs import MAP_ANONYMOUS, MAP_PRIVATE, PAGE, SIGSEGV, FaultOutcome, Prot
from mmusim.runtime.gostack import GoStackPolicy
from mmusim.runtime.pager import HwPager
from mmusim.runtime.policies import RUNTIME_POLICIES, RtStack, RuntimeStackPolicy
from mmusim.runtime.process import Process
from mmusim.runtime.sigstate import MINSIGSTKSZ
from mmusim.testing.config import load_board_config

__all__ = ["PromiseBroken", "RuntimeMachine", "runtime_policy"]

LO = 0x4000_0000
HI = 0x8000_0000
RW = Prot.READ | Prot.WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
#: Stack sizes drawn by default: page multiples and a few bytes either side of them.
DEFAULT_SIZES: tuple[int, ...] = (PAGE, 2 * PAGE, 4 * PAGE - 8, 4 * PAGE, 16 * PAGE + 8)
MAX_STACKS = 6
MAX_NEIGHBOURS = 4
_CONFIGURED: dict[str, type[RuntimeMachine]] = {}

PolicyArg = RuntimeStackPolicy | type[RuntimeStackPolicy] | str
M = TypeVar("M", bound=RuleBasedStateMachine)


class PromiseBroken(AssertionError):
    """A runtime policy broke its promise, or an invariant of the address space failed."""


def configured_subclass(cls: type[M], made: dict[str, type[M]], **settings: Any) -> type[M]:
    """A subclass of machine ``cls`` with the ``settings`` that are not None as class
    attributes, named by the call that makes it (``RuntimeMachine.configured(policy=...)``), so
    that a falsifying example prints as runnable code; the same settings give the same class
    (kept in ``made``). A policy class shows as its name, anything else as its repr."""
    args: list[str] = []
    attrs: dict[str, Any] = {"__module__": cls.__module__}
    for key, value in settings.items():
        if value is None:
            continue
        shown = value.__name__ if isinstance(value, type) else repr(value)
        args.append(f"{key}={shown}")
        attrs[key] = value
    name = f"{cls.__name__}.configured({', '.join(args)})"
    key = f"{cls.__module__}.{cls.__qualname__}:{name}"
    if key not in made:
        made[key] = type(name, (cls,), attrs)
    return made[key]


def runtime_policy(policy: PolicyArg) -> RuntimeStackPolicy:
    """A policy instance from an instance, a class, or a name of ``RUNTIME_POLICIES``."""
    if isinstance(policy, str):
        if policy not in RUNTIME_POLICIES:
            raise ValueError(
                f"unknown runtime policy {policy!r} (known: {', '.join(sorted(RUNTIME_POLICIES))})"
            )
        return RUNTIME_POLICIES[policy]()
    if isinstance(policy, type):
        return policy()
    return policy


def event(what: str) -> None:
    """A Hypothesis ``event`` -- skipped outside a test (a printed counterexample run as code)."""
    if currently_in_test_context():
        _event(what)


def _escape(kind: str, s: RtStack, by: int) -> int:
    """The address ``by`` bytes beyond the stack (1 <= by < PAGE): below ``lo`` or at/above
    ``hi``."""
    return s.lo - by if kind == "overflow" else s.hi + by - 1


class RuntimeMachine(RuleBasedStateMachine):
    """A runtime stack policy under test (module docstring); configure it with ``configured``."""

    policy: ClassVar[PolicyArg] = "posix-reserve"
    stack_sizes: ClassVar[tuple[int, ...]] = DEFAULT_SIZES
    altstack_on_new_threads: ClassVar[bool] = True  # False: the broken signals variant
    signals: ClassVar[bool] = True  # False: the bare machine only (no ``thread_overflow``)
    board: ClassVar[str] = "qemu_x86_64"

    def __init__(self) -> None:
        super().__init__()
        self.pol = runtime_policy(self.policy)
        if isinstance(self.pol, GoStackPolicy):
            # Its stacks are blocks of one heap mapping, with no guard: nothing this machine
            # checks (guards, a stack's own mapping) applies. Its machine checks its prologue.
            raise ValueError(f"{self.pol!r}: Go's stacks are checked by GoStackMachine")
        self.rlimit = -(-max(self.stack_sizes) // PAGE) * PAGE
        mem = PhysMem()
        tlbs = [Tlb(), Tlb()]
        self.pager = HwPager(mem, MODE_IA32E, tlbs=tlbs)
        ctl = ControlState.for_mode("ia32e", self.pager.cr3, nxe=True)
        self.cpus = [Cpu(mem, ctl, cpu_id=i, cpl=3, tlb=tlb) for i, tlb in enumerate(tlbs)]
        self.space = AddressSpace(self.pager, LO, HI, flavour=self.pol.space_flavour(),
                                  rlimit_stack=self.rlimit)  # fmt: skip
        self.stacks: list[RtStack] = []
        self.neighbours: list[tuple[str, int, int]] = []  # name, start, end
        self.serial = 0
        self.log: list[str] = []

    @classmethod
    def configured(
        cls,
        *,
        policy: PolicyArg | None = None,
        stack_sizes: tuple[int, ...] | None = None,
        altstack_on_new_threads: bool | None = None,
        signals: bool | None = None,
    ) -> type[RuntimeMachine]:
        """A subclass with these settings, named by the call that makes it -- a falsifying
        example prints as ``state = RuntimeMachine.configured(policy=HaikuAreas(...))()``,
        runnable where the policy's class is in scope. The same arguments give the same class."""
        return configured_subclass(
            cls,
            _CONFIGURED,
            policy=policy,
            stack_sizes=None if stack_sizes is None else tuple(stack_sizes),
            altstack_on_new_threads=altstack_on_new_threads,
            signals=signals,
        )

    @classmethod
    def check(cls, settings: Any = None) -> None:
        """Run this machine as a test under ``settings`` (default: the active profile)."""
        run_state_machine_as_test(cls, settings=settings)

    # -- reporting ---------------------------------------------------------------------------

    def describe(self) -> str:
        lines = [f"policy {self.pol!r} ({self.pol.name}), catches {sorted(self.pol.catches)}"]
        for s in self.stacks:
            guards = ", ".join(f"{a:#x}-{b:#x}" for a, b in s.guards)
            lines.append(f"  stack {s.name}: usable {s.lo:#x}-{s.hi:#x}, guards {guards}")
        lines += [f"  mapping {n}: {a:#x}-{b:#x}" for n, a, b in self.neighbours]
        lines += ["  areas:"] + [f"    {line}" for line in self.space.maps().splitlines()]
        lines += [f"  did: {line}" for line in self.log[-8:]]
        return "\n".join(lines)

    def _fail(self, message: str) -> None:
        err = PromiseBroken(f"policy {self.pol.name!r}: {message}")
        err.add_note(self.describe())
        raise err

    # -- the MMU -----------------------------------------------------------------------------

    def write(self, va: int, cpu: int = 0) -> FaultOutcome | None:
        """A user write of one byte through CPU ``cpu``; a #PF goes to ``AddressSpace.fault``
        and the write is retried. The refusal, or None once the write went through."""
        for _ in range(3):
            try:
                self.cpus[cpu].write(va, b"\x5a")
                return None
            except Trap as trap:
                if trap.cr2 != va:
                    self._fail(f"write at {va:#x} trapped with CR2 {trap.cr2!r}: {trap}")
                out = self.space.fault(va, write=True)
                if not out.resolved:
                    return out
        self._fail(f"write at {va:#x} faults forever")
        raise AssertionError  # pragma: no cover

    def owner(self, va: int) -> str | None:
        """Whose area holds ``va``: the stack or mapping the machine named it after (a policy
        names a stack's areas ``name`` or ``name:...``; areas merge only when named alike)."""
        area = self.space.find(va)
        return None if area is None else area.name.split(":")[0]

    def _size(self, size: int) -> int:
        # A growsdown stack's extent is RLIMIT_STACK, one limit for the process: every stack of
        # such a policy is made that size, so that its promise holds at its own ``lo``.
        return self.rlimit if self.pol.size_from_rlimit else size

    # -- rules: the bare machine -------------------------------------------------------------

    # Rules that cannot apply return at once rather than having a precondition: which rules are
    # enabled then never depends on the state, so deleting a step while shrinking does not change
    # the rules the later steps pick (with preconditions, the ci profile's shrinks got stuck).

    @rule(pick=st.integers(0, 15))
    def create(self, pick: int) -> None:
        """``policy.create`` a stack of one of ``stack_sizes`` (at most ``MAX_STACKS`` live)."""
        if len(self.stacks) >= MAX_STACKS:
            return
        size = self._size(self.stack_sizes[pick % len(self.stack_sizes)])
        name = f"s{self.serial}"
        self.serial += 1
        self.log.append(f"create {name} ({size} bytes)")
        s = self.pol.create(self.space, name, size)
        self.stacks.append(s)

    @rule(which=st.integers(0, MAX_STACKS - 1), cpu=st.integers(0, 1))
    def destroy(self, which: int, cpu: int) -> None:
        if not self.stacks:
            return
        s = self.stacks.pop(which % len(self.stacks))
        self.log.append(f"destroy {s.name}")
        top = s.hi - 8
        area = self.space.find(top)
        held = area is not None and top & ~(PAGE - 1) in area.committed
        self.pol.destroy(self.space, s)
        self._consistent(deep=True)
        if held:
            try:
                self.cpus[cpu].write(top, b"\x5a")
            except Trap:
                return
            if self.owner(top) is None:
                self._fail(f"after destroying {s.name}, a write at {top:#x} went through "
                           "(a stale TLB entry or a PTE left present)")  # fmt: skip

    @rule(
        which=st.integers(0, MAX_STACKS - 1),
        page=st.integers(0, 32),
        byte=st.sampled_from([1, 8, 64, PAGE // 2, PAGE - 8, PAGE]),
        cpu=st.integers(0, 1),
    )
    def touch(self, which: int, page: int, byte: int, cpu: int) -> None:
        """A write inside the stack, ``page`` pages and ``byte`` bytes below its top."""
        if not self.stacks:
            return
        s = self.stacks[which % len(self.stacks)]
        if s.lo >= s.hi:
            return  # no usable byte (a one-page stack whose guard took its only page)
        va = max(s.hi - page * PAGE - byte, s.lo)
        self.log.append(f"touch {s.name} at {va:#x} (cpu {cpu})")
        out = self.write(va, cpu)
        area = self.space.find(va)
        if out is None:
            if self.owner(va) != s.name:
                self._fail(
                    f"a write inside {s.name} at {va:#x} went silently into "
                    f"{area.label if area else 'nothing'}"
                )
            return
        top = self.space.find(s.hi - 1)
        if top is not None and top.growsdown and out.signal == SIGSEGV:
            event("runtime: a growsdown stack's growth refused inside its size")
            return
        self._fail(f"a write inside {s.name} at {va:#x} was refused: {out}")

    @rule(
        which=st.integers(0, MAX_STACKS - 1),
        kind=st.sampled_from(["overflow", "underflow"]),
        by=st.sampled_from([1, 8, 64, PAGE // 2, PAGE - 8, PAGE - 1]) | st.integers(1, PAGE - 1),
        cpu=st.integers(0, 1),
    )
    def escape(self, which: int, kind: str, by: int, cpu: int) -> None:
        """A write ``by`` bytes (< a page) beyond the stack: below ``lo`` (an overflow) or above
        ``hi`` (an underflow). Promised (``catches``): a SIGSEGV whose ``si_addr`` is a guard
        of this stack."""
        if not self.stacks:
            return
        s = self.stacks[which % len(self.stacks)]
        va = _escape(kind, s, by)
        self.log.append(f"{kind} of {s.name} by {by} at {va:#x} (cpu {cpu})")
        out = self.write(va, cpu)
        if kind not in self.pol.catches:
            event(f"runtime: {kind} (not promised) {'faulted' if out else 'went through'}")
            return
        if out is None:
            area = self.space.find(va)
            self._fail(
                f"{kind} of {s.name} by {by} bytes at {va:#x} went silently into "
                f"{area.label if area else 'nothing'}: the policy promises to catch {kind}s"
            )
            return
        if out.signal != SIGSEGV or out.si_addr != va or not s.guard_of(out.si_addr):
            self._fail(f"{kind} of {s.name} at {va:#x}: {out}, not attributed to its guard")

    @rule(which=st.integers(0, MAX_STACKS - 1), pages=st.integers(1, 300), cpu=st.integers(0, 1))
    def big_frame(self, which: int, pages: int, cpu: int) -> None:
        """An unprobed frame that jumps over the guard below the stack: never promised."""
        if not self.stacks:
            return
        s = self.stacks[which % len(self.stacks)]
        below = [g for g in s.guards if g[1] <= s.lo]
        bottom = min((g[0] for g in below), default=s.lo)
        va = bottom - pages * PAGE + 8
        if va < LO:
            return
        self.log.append(f"big frame below {s.name} at {va:#x}")
        out = self.write(va, cpu)
        event(f"runtime: big frame {'faulted' if out else 'went through, silently'}")

    @rule(pages=st.integers(1, 8))
    def neighbour(self, pages: int) -> None:
        """Another mapping, placed by the address space (top-down, its gaps honoured)."""
        if len(self.neighbours) >= MAX_NEIGHBOURS:
            return
        name = f"m{self.serial}"
        self.serial += 1
        start = self.space.mmap(pages * PAGE, RW, ANON, name=name)
        self.neighbours.append((name, start, start + pages * PAGE))
        self.log.append(f"mmap {name} at {start:#x} ({pages} pages)")

    @rule(which=st.integers(0, MAX_NEIGHBOURS - 1))
    def unmap_neighbour(self, which: int) -> None:
        if not self.neighbours:
            return
        name, a, b = self.neighbours.pop(which % len(self.neighbours))
        self.log.append(f"munmap {name}")
        self.space.munmap(a, b - a)

    # -- rules: signals on the kernel --------------------------------------------------------

    @precondition(lambda self: self.signals)
    @rule(pick=st.integers(0, 15), by=st.sampled_from([8, 64, PAGE // 2]))
    def thread_overflow(self, pick: int, by: int) -> None:
        """A new thread overflows a stack of the policy, with the process's SIGSEGV handler
        installed ``SA_ONSTACK`` (module docstring): the handler must report it."""
        size = self._size(self.stack_sizes[pick % len(self.stack_sizes)])
        size = -(-size // PAGE) * PAGE
        self.log.append(f"thread overflow of a {size}-byte stack by {by}")
        # The scenario is a function of (size, by) and the class's settings: run it once.
        cache = type(self).__dict__.get("_overflows")
        if cache is None:
            cache = {}
            type.__setattr__(type(self), "_overflows", cache)
        if (size, by) not in cache:
            cache[size, by] = self.judge_overflow(*self.overflow_on_kernel(size, by), by)
        problem = cache[size, by]
        if problem:
            self._fail(problem)

    def judge_overflow(self, k: Kernel, p: Process, s: RtStack, by: int) -> str | None:
        """What is wrong with the outcome of ``overflow_on_kernel``, or None."""
        t = k.thread("t")
        killed = k.facts.get("killed")
        if killed or t.exit_reason != "returned":
            return (
                "a new thread's stack overflow was not reported by the SIGSEGV handler "
                f"(SA_ONSTACK): thread {t.exit_reason}: {killed[-1] if killed else ''}"
            )
        if "sigsegv.si_addr" not in k.facts:
            return f"a new thread's overflow by {by} bytes raised no SIGSEGV: it went silently"
        if k.facts.get("sigsegv.handler") != ["h"]:
            return f"the handler ran {k.facts.get('sigsegv.handler')!r}, not once"
        addr = k.facts["sigsegv.si_addr"][-1]
        if not s.guard_of(addr):
            return f"the thread's overflow at {addr:#x} is not in its stack's guard"
        if k.facts.get("sigsegv.stack") != ["alternate"]:
            return f"the handler ran on {k.facts.get('sigsegv.stack')!r}"
        try:
            p._check()
        except AssertionError as e:
            return f"the process after the overflow: {e}"
        return None

    def overflow_on_kernel(self, size: int, by: int) -> tuple[Kernel, Process, RtStack]:
        """Boot a kernel with a process of the policy's flavour and run the scenario: ``main``
        sets the handler and its own alternate stack, starts thread ``t``, joins it; ``t`` (its
        own ``sigaltstack`` if ``altstack_on_new_threads``) overflows a policy stack by ``by``
        bytes inside ``sigsetjmp``; the handler ``siglongjmp`` s back."""
        cfg = load_board_config(self.board, (), origin="runtime-machine")
        alt = MINSIGSTKSZ + 4096

        def op(kind: str, body: tuple[Op, ...] = (), **args: Any) -> Op:
            return Op(kind, body=body, args=args)

        main = (
            op("sigaction", handler="h", onstack=True),
            op("sigaltstack", mapping="alt_main"),
            Op("create", target="t", stack="tstack", label="worker", n=K_FOREVER, prio=-1),
            Op("start", target="t"),
            Op("join", target="t"),
        )
        own = (op("sigaltstack", mapping="alt_t"),) if self.altstack_on_new_threads else ()
        worker = (*own, op("sigsetjmp", (op("on_stack", (Op("push", n=size + by),),
                                            mapping="s"),)))  # fmt: skip
        k = Kernel(cfg.values, stacks=(StackObject("tstack", PAGE, True),), main_body=main,
                   bodies={"worker": worker, "h": (op("siglongjmp"),)})  # fmt: skip
        p = Process.attach(k, flavour=self.pol.space_flavour(), rlimit_stack=size)
        for name in ("alt_main", "alt_t"):
            p.mappings[name] = (p.space.mmap(alt, RW, ANON, name=name), alt)
        s = self.pol.create(p.space, "s", size)
        p.mappings["s"] = (s.lo, s.hi - s.lo)
        k.run()
        return k, p, s

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def consistent(self) -> None:
        """The address space's invariants (the page tables' whole walk, ``HwPager._check``,
        runs after a ``destroy`` and at ``teardown``: it costs a walk of every table)."""
        self._consistent(deep=False)

    def _consistent(self, deep: bool) -> None:
        try:
            self.space._check(deep=False)
            if deep:
                self.pager._check()
        except PromiseBroken:
            raise
        except AssertionError as e:
            self._fail(f"address space: {e}")

    @invariant()
    def guards_fault(self) -> None:
        """The guard page next to each live stack faults on a write, at both its ends, with
        ``si_addr`` the address written."""
        for s in self.stacks:
            for g0, g1 in s.guards:
                lo, hi = (max(g0, g1 - PAGE), g1) if g1 <= s.lo else (g0, min(g1, g0 + PAGE))
                for va in (lo, hi - 1):
                    out = self.write(va, 0)
                    if out is None or out.si_addr != va:
                        area = self.space.find(va)
                        self._fail(
                            f"the guard of {s.name} at {va:#x} does not fault on a write: "
                            f"{out or 'it went into ' + (area.label if area else 'nothing')}"
                        )

    @invariant()
    def stacks_disjoint(self) -> None:
        """No two live stacks overlap (usable parts and what ``destroy`` unmaps)."""
        spans = sorted((min(s.lo, s.start), max(s.hi, s.end), s.name) for s in self.stacks)
        for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
            if start < end:
                self._fail(f"stacks {a} and {b} overlap")

    def teardown(self) -> None:
        """Destroy every stack and mapping: every frame must come back."""
        self._consistent(deep=True)
        for s in self.stacks:
            self.pol.destroy(self.space, s)
        for _, a, b in self.neighbours:
            self.space.munmap(a, b - a)
        self.stacks.clear()
        self.neighbours.clear()
        self._consistent(deep=True)
        if self.pager.frames or len(self.space):
            self._fail(
                f"after destroying everything: {self.pager.frames} frames held, "
                f"{len(self.space)} areas left"
            )
