"""``KernelMachine``: a Hypothesis rule-based state machine over a booted mmusim kernel.

The machine boots the kernel of its class attributes (``board``, ``config`` -- Kconfig lines --,
``policy``) with a pool of stack objects and a driver thread, ``main``, whose body serves kernel
calls posted to its mailbox (``Kernel.post``; a posted call wakes the server through a mailbox
interrupt, like a ``k_msgq_put`` from an ISR). Rules post calls and step CPUs:

* made by ``main``: ``create``, ``start``, ``abort`` (another thread), ``join``, ``resume``,
  ``k_mem_map``, ``k_mem_unmap`` -- enabled while ``main`` waits for work;
* made by a created thread, on itself: ``abort_self``, ``exit`` (return from the entry function),
  ``suspend_self``, ``stack_op`` (push, call, alloca, underflow, ... on its own stack);
* ``step(cpu)`` performs one step of one CPU, ``run(steps, schedule)`` several, round-robin or in
  a seeded random order: the interleavings are Hypothesis's to choose, and to shrink.

Every kernel invariant (``mmusim.kernel.invariants.CHECKS``) is checked after every kernel step and
is also an ``@invariant`` of the machine (``inv_check_guards``, ...); ``teardown`` runs the kernel
to quiescence and checks ``QUIESCENT_CHECKS`` (no leaked stack). A failure carries the last kernel
steps as a note. Subclass it to configure, or to add rules and invariants::

    class LowerGuardMachine(KernelMachine):
        policy = LowerGuardPolicy

    TestLowerGuard = LowerGuardMachine.TestCase

Deviation: the driver thread and its mailbox are the harness's, not Zephyr's (a ztest thread
would call the API directly); what they call is the kernel's real code.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from mmusim.kernel import (
    CHECKS,
    PAGE,
    QUIESCENT_CHECKS,
    InvariantViolation,
    Kernel,
    Op,
    StackObject,
    StackPolicy,
    check_all,
    thread_state_name,
)
from mmusim.testing.config import load_board_config
from mmusim.testing.specs import (
    DEFAULT_STACK_SIZES,
    Step,
    ThreadSpec,
    schedules,
    steps,
    thread_specs,
)

__all__ = ["KernelMachine", "boot_kernel"]

THREADS = ("t0", "t1", "t2")
MAPPINGS = ("m0", "m1")
_CONFIGURED: dict[Any, type[KernelMachine]] = {}


def stack_pool(sizes: tuple[int, ...], copies: int) -> tuple[StackObject, ...]:
    """``copies`` user-capable (``K_THREAD_STACK_DEFINE``) and kernel (``K_KERNEL_STACK_DEFINE``)
    stack objects of each size: ``stack_4096_0``, ``kstack_4096_0``, ..."""
    out = []
    for size in sizes:
        for i in range(copies):
            out.append(StackObject(f"stack_{size}_{i}", size, True))
            out.append(StackObject(f"kstack_{size}_{i}", size, False))
    return tuple(out)


def boot_kernel(
    board: str = "qemu_x86_64",
    config: tuple[str, ...] = (),
    policy: StackPolicy | type[StackPolicy] | None = None,
    *,
    stack_sizes: tuple[int, ...] = DEFAULT_STACK_SIZES,
    copies: int = len(THREADS),
    check: Callable[[Kernel], None] | None = None,
) -> Kernel:
    """A booted kernel whose ``main`` thread serves posted calls, with a stack-object pool."""
    cfg = load_board_config(board, tuple(config), origin="machine")
    return Kernel(
        cfg.values,
        stacks=stack_pool(stack_sizes, copies),
        main_body=(Op("serve"),),
        check=check,
        policy=policy,
    )


@attrs.define
class Campaign:
    """The counts of one ``KernelMachine.check`` run: examples finished (each a fresh kernel run
    by a sequence of rules, then settled) and the kernel steps they took; ``progress`` is told
    after each example. Hypothesis's own phases (generation, shrinking) all count."""

    progress: Callable[[Campaign], None] | None = None
    examples: int = 0
    kernel_steps: int = 0
    max_steps: int = 0  # the most kernel steps one example took

    def example_done(self, steps: int) -> None:
        self.examples += 1
        self.kernel_steps += steps
        self.max_steps = max(self.max_steps, steps)
        if self.progress is not None:
            self.progress(self)


class KernelMachine(RuleBasedStateMachine):
    """The kernel under test as a Hypothesis state machine; configure it by subclassing."""

    board: ClassVar[str] = "qemu_x86_64"
    config: ClassVar[tuple[str, ...]] = ()  # extra Kconfig lines, e.g. ("CONFIG_USERSPACE=y",)
    policy: ClassVar[StackPolicy | type[StackPolicy] | None] = None  # None: Kconfig's choice
    stack_sizes: ClassVar[tuple[int, ...]] = DEFAULT_STACK_SIZES
    max_run: ClassVar[int] = 200  # most kernel steps one ``run`` rule takes
    settle_steps: ClassVar[int] = 20_000  # most kernel steps ``teardown`` takes to quiesce
    history: ClassVar[int] = 16  # kernel steps shown in a failure's note
    _campaign: ClassVar[Campaign | None] = None  # the run of ``check`` in progress, if any
    # Told after each example when ``check`` is given no ``progress`` (the pytest plugin's
    # ``machine`` fixture sets it to draw a line on the terminal).
    progress_reporter: ClassVar[Callable[[Campaign], None] | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.trail: deque[str] = deque(maxlen=self.history)
        self._checked_at = -1
        self.kernel = boot_kernel(
            self.board, tuple(self.config), self.policy, stack_sizes=tuple(self.stack_sizes),
            check=self._check_step,
        )  # fmt: skip
        self.userspace = bool(self.kernel.cfg.get("USERSPACE"))
        self.settle_main()  # main runs to its mailbox: the machine starts from there

    @classmethod
    def configured(
        cls,
        *,
        board: str | None = None,
        config: tuple[str, ...] | list[str] = (),
        policy: StackPolicy | type[StackPolicy] | None = None,
    ) -> type[KernelMachine]:
        """A subclass with these settings, named by the call that makes it -- so a falsifying
        example prints as ``state = KernelMachine.configured(policy=MyPolicy)()``, runnable
        where ``MyPolicy`` is in scope. The same arguments give the same class."""
        args = []
        if board is not None:
            args.append(f"board={board!r}")
        if config:
            args.append(f"config={tuple(config)!r}")
        if policy is not None:
            shown = policy.__name__ if isinstance(policy, type) else repr(policy)
            args.append(f"policy={shown}")
        name = f"{cls.__name__}.configured({', '.join(args)})"
        key = (cls, name, policy if isinstance(policy, type) else repr(policy))
        made = _CONFIGURED.get(key)
        if made is None:
            attrs = {"config": tuple(config), "policy": policy, "__module__": cls.__module__}
            if board is not None:
                attrs["board"] = board
            made = _CONFIGURED[key] = type(name, (cls,), attrs)
        return made

    @classmethod
    def check(
        cls, settings: Any = None, *, progress: Callable[[Campaign], None] | None = None
    ) -> None:
        """Run this machine as a test under ``settings`` (default: the active profile).
        ``progress`` is called after every example with the campaign's counts so far (the
        pytest plugin draws them on a terminal)."""
        campaign = Campaign(progress if progress is not None else cls.progress_reporter)
        previous, cls._campaign = cls._campaign, campaign
        try:
            run_state_machine_as_test(cls, settings=settings)
        finally:
            cls._campaign = previous

    # -- checking ----------------------------------------------------------------------------

    def _check_step(self, k: Kernel) -> None:
        problems = check_all(k)
        self._checked_at = k.steps
        if problems:
            self._fail(f"after kernel step {k.steps}:\n  " + "\n  ".join(problems))

    def _fail(self, message: str) -> None:
        err = InvariantViolation(message)
        err.add_note(self.describe())
        raise err

    def describe(self) -> str:
        """The last kernel steps, the threads and the console: what a failure note shows."""
        k = self.kernel
        lines = [f"policy {k.policy.name!r}; last kernel steps (cpu: thread: routine: label):"]
        lines += [f"  {s}" for s in self.trail]
        for t in k.threads.values():
            if t.generation:
                m = t.stack_info.mapped
                if m.addr is not None:
                    where = f"mapped {m.addr:#x}+{m.sz:#x}"
                else:
                    where = "unmapped" if k.policy.remaps else "in place"
                lines.append(
                    f"  thread {t.name}: {thread_state_name(k, t)}, stack {where}, "
                    f"start {t.stack_info.start:#x} size {t.stack_info.size:#x}"
                    + (f", {t.exit_reason}" if t.exit_reason else "")
                )
        lines += [f"  console: {line}" for line in k.log[-6:]]
        return "\n".join(lines)

    # -- driving -----------------------------------------------------------------------------

    def note(self, action: tuple[int, str]) -> None:
        """Remember the kernel action about to be performed, for the failure note."""
        k = self.kernel
        cpu, kind = action
        c = k.cpus[cpu]
        point = c.irq_pending if c.irq is not None else c.ctx.pending
        who = "irq" if c.irq is not None or kind == "irq" else c.ctx.name
        self.trail.append(f"CPU {cpu}: {who}: {'take interrupt' if kind == 'irq' else point}")

    def do(self, action: tuple[int, str]) -> None:
        """Perform one kernel action, remembering what it was for the failure note."""
        self.note(action)
        self.kernel.do(action)

    def run_kernel(self, steps: int, schedule: int | None = None) -> int:
        """Up to ``steps`` kernel steps of the kernel's own schedule (``Kernel.run``): round-robin,
        or seeded random with ``schedule``. Sleepers wake (the clock jumps) when nothing else can
        run; a CPU still waiting then is a deadlock. Returns the steps taken."""
        return self.kernel.run(seed=schedule, steps=steps, before=self.note)

    def settle_main(self) -> None:
        """Run one step at a time -- each the lowest-numbered CPU that can go -- until ``main``
        waits for work again, at most ``max_run`` steps: the call just posted is made, while the
        other CPUs go on with their threads."""
        for _ in range(self.max_run):
            if self.main_idle() or not self.run_kernel(1):
                return

    def call(self, op: Op) -> None:
        """``main`` makes kernel call ``op`` (see ``settle_main``)."""
        self.kernel.post("main", op)
        self.settle_main()

    def live(self, name: str) -> bool:
        t = self.kernel.threads.get(name)
        return t is not None and t.generation > 0 and not t.dead

    def main_idle(self) -> bool:
        """``main`` waits on its mailbox with nothing queued: a call posted now runs next."""
        main = self.kernel.threads["main"]
        return main.mbox_wait and not self.kernel.mailboxes.get("main")

    def free_stack(self, spec: ThreadSpec) -> StackObject | None:
        """The first stack object of the spec's size and kind no live thread uses."""
        k = self.kernel
        user_capable = spec.user or not spec.kernel_stack
        for obj in k.stacks.values():
            if obj.size != spec.stack_size or obj.user_capable != user_capable:
                continue
            holder = k.stack_users.get(obj.name)
            if holder is None or holder.dead:
                return obj
        return None

    # -- rules: calls made by main -----------------------------------------------------------

    @precondition(lambda self: self.main_idle())
    @rule(thread=st.sampled_from(THREADS), spec=thread_specs(), start=st.booleans())
    def create(self, thread: str, spec: ThreadSpec, start: bool) -> None:
        """``k_thread_create(thread, stack, spec.body + serve)``, started at once (K_NO_WAIT) or
        not (K_FOREVER); a dead thread object is joined first, as Zephyr requires before
        re-creating it."""
        if self.live(thread) or (spec.user and not self.userspace):
            return
        stack = self.free_stack(spec)
        if stack is None:
            return
        k = self.kernel
        t = k.threads.get(thread)  # the create op defines the thread object the first time
        k.mailboxes.pop(thread, None)  # requests the dead thread never took
        if t is not None and t.generation:
            self.call(Op("join", target=thread))
            if not self.main_idle():
                return  # the join did not finish within max_run steps: try again later
        k.bodies[f"body.{thread}"] = (*spec.ops(), Op("serve"))
        self.call(
            Op("create", n=0 if start else -1, target=thread, stack=stack.name,
               label=f"body.{thread}", user=spec.user, prio=spec.prio),
        )  # fmt: skip

    @precondition(lambda self: self.main_idle())
    @rule(thread=st.sampled_from(THREADS))
    def start(self, thread: str) -> None:
        if self.live(thread):
            self.call(Op("start", target=thread))

    @precondition(lambda self: self.main_idle())
    @rule(thread=st.sampled_from(THREADS))
    def abort(self, thread: str) -> None:
        """``k_thread_abort(thread)`` by main (an abort of another thread)."""
        if self.live(thread):
            self.call(Op("abort", target=thread))

    @precondition(lambda self: self.main_idle())
    @rule(thread=st.sampled_from(THREADS))
    def join(self, thread: str) -> None:
        """``k_thread_join(thread, K_FOREVER)``: main waits until the thread dies."""
        t = self.kernel.threads.get(thread)
        if t is not None and t.generation:
            self.call(Op("join", target=thread))

    @precondition(lambda self: self.main_idle())
    @rule(thread=st.sampled_from(THREADS))
    def resume(self, thread: str) -> None:
        if self.live(thread):
            self.call(Op("resume", target=thread))

    @precondition(lambda self: self.main_idle())
    @rule(name=st.sampled_from(MAPPINGS), pages=st.integers(1, 3))
    def k_mem_map(self, name: str, pages: int) -> None:
        if name not in self.kernel.mappings:
            self.call(Op("k_mem_map", n=pages * PAGE, target=name))

    @precondition(lambda self: self.main_idle())
    @rule(name=st.sampled_from(MAPPINGS))
    def k_mem_unmap(self, name: str) -> None:
        if name in self.kernel.mappings:
            self.call(Op("k_mem_unmap", target=name))

    # -- rules: calls a thread makes on itself -----------------------------------------------

    @rule(thread=st.sampled_from(THREADS))
    def abort_self(self, thread: str) -> None:
        """``k_thread_abort(k_current_get())``, once the thread takes it from its mailbox."""
        if self.live(thread):
            self.kernel.post(thread, Op("abort_self"))

    @rule(thread=st.sampled_from(THREADS))
    def exit(self, thread: str) -> None:
        """Return from the entry function (Zephyr then aborts the thread: a self-abort)."""
        if self.live(thread):
            self.kernel.post(thread, Op("return"))

    @rule(thread=st.sampled_from(THREADS))
    def suspend_self(self, thread: str) -> None:
        """``k_thread_suspend(k_current_get())``; ``resume`` wakes it."""
        if self.live(thread):
            self.kernel.post(thread, Op("suspend", target=thread))

    @rule(thread=st.sampled_from(THREADS), step=steps())
    def stack_op(self, thread: str, step: Step) -> None:
        """One more body step (push, call, alloca, underflow, ...) on the thread's own stack."""
        if self.live(thread):
            for op in step.ops():
                self.kernel.post(thread, op)

    # -- rules: stepping ---------------------------------------------------------------------

    @rule(cpu=st.integers(0, 1), irq=st.booleans())
    def step(self, cpu: int, irq: bool) -> None:
        """One step of CPU ``cpu`` (``irq``: take its pending interrupt, if it can)."""
        k = self.kernel
        cpu %= k.ncpus
        mine = [a for a in k.actions() if a[0] == cpu]
        if mine:
            pick = [a for a in mine if (a[1] == "irq") == irq] or mine
            self.do(pick[0])

    @rule(steps=st.integers(1, 200), schedule=schedules())
    def run(self, steps: int, schedule: int | None) -> None:
        self.run_kernel(min(steps, self.max_run), schedule)

    # -- invariants --------------------------------------------------------------------------

    def check_invariants(
        self, settings: Any, output: Callable[[str], object], *args: Any, **kwargs: Any
    ) -> None:
        """Hypothesis's invariant pass, minus printing ``state.inv_check_*()`` in a falsifying
        example: every rule re-checks them after each kernel step, so the printed rules alone
        reproduce the failure, and stay readable."""

        def quiet(line: str) -> object:
            return None if line.startswith("state.inv_check_") else output(line)

        super().check_invariants(settings, quiet, *args, **kwargs)

    def _invariant(self, check: Callable[[Kernel], list[str]]) -> None:
        if self._checked_at == self.kernel.steps:
            return  # already checked after this very kernel step
        problems = check(self.kernel)
        if problems:
            self._fail(
                f"{check.__name__} at kernel step {self.kernel.steps}:\n  " + "\n  ".join(problems)
            )

    def teardown(self) -> None:
        """Run to quiescence, then judge the finished run (``QUIESCENT_CHECKS``: no leaked stack)."""
        self.run_kernel(self.settle_steps)
        k = self.kernel
        if self._campaign is not None:
            self._campaign.example_done(k.steps)
        if not k.quiescent():
            return  # still busy after settle_steps (e.g. main joined a thread that never ends)
        problems = [p for check in QUIESCENT_CHECKS for p in check(k)]
        if problems:
            self._fail("at quiescence:\n  " + "\n  ".join(problems))


def _add_kernel_invariants() -> None:
    """Every kernel invariant becomes an ``@invariant`` of the machine: ``inv_check_guards``..."""
    for check in CHECKS:

        def inv(self: KernelMachine, _check: Callable[[Kernel], list[str]] = check) -> None:
            self._invariant(_check)

        inv.__name__ = f"inv_{check.__name__}"
        inv.__doc__ = check.__doc__
        setattr(KernelMachine, inv.__name__, invariant()(inv))


_add_kernel_invariants()
