"""Threads: ``struct k_thread`` with its ``stack_info``, thread states, stack objects, and bodies as data.

A thread body is a tuple of ``Op`` values -- push N bytes, call a frame of S bytes (optionally
probing every page), touch an offset, write an address, sleep, yield, abort self, abort another
thread, and the kernel calls a test's main thread makes (create, start, join, k_mem_map, ...).
The interpreter (``mmusim.kernel.body``) runs a body on the thread's real stack, through the MMU.

Lock discipline (xv6 style, at the declaration):

* ``KThread.state``, ``cpu``, ``switch_handle``, ``join_waiters`` -- guarded by ``_sched_spinlock``;
* ``KThread.stack_info.mapped`` -- written by the creating thread before the thread is started, and
  cleared under ``thread_cleanup_lock`` (``defer_thread_cleanup`` / post-fix ``do_thread_cleanup``);
* ``KThread.sp`` -- private to the CPU running the thread.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from mmusim.kernel.routines import Condition

if TYPE_CHECKING:
    from mmusim.hw import PageTables
    from mmusim.kernel.domain import KMemDomain


class ThreadState(enum.IntFlag):
    """Zephyr's ``thread_state`` bits (kernel_structs.h)."""

    DUMMY = 1 << 0
    PENDING = 1 << 1
    PRESTART = 1 << 2  # _THREAD_SLEEPING in newer trees: created, not started
    DEAD = 1 << 3
    SUSPENDED = 1 << 4
    ABORTING = 1 << 5
    SUSPENDING = 1 << 6
    QUEUED = 1 << 7
    # DEVIATION(sleeping-bit): a thread on the tick clock has mmusim's own SLEEPING bit; newer
    # Zephyr marks it _THREAD_SUSPENDED with a timeout (z_tick_sleep), so k_thread_suspend of a
    # sleeping thread is a no-op there and suspends it here.
    SLEEPING = 1 << 8  # mmusim: waiting on the tick clock (Zephyr keeps this in the timeout)


HALTING = ThreadState.ABORTING | ThreadState.SUSPENDING
_DEAD, _HALTING = int(ThreadState.DEAD), int(HALTING)
K_USER = 1 << 2  # thread option: user mode
K_ESSENTIAL = 1 << 0
K_FOREVER = -1
K_NO_WAIT = 0

EINVAL = 22
ENOTSUP = 134


@attrs.define(eq=False)
class StackObject:
    """A statically defined stack object (``K_THREAD_STACK_DEFINE`` / ``K_KERNEL_STACK_DEFINE``)
    in the kernel image's ``.noinit`` section: ``addr`` is its (identity-mapped) address."""

    name: str
    size: int  # the size given to the DEFINE macro
    user_capable: bool  # K_THREAD_STACK_DEFINE (True) or K_KERNEL_STACK_DEFINE (False)
    addr: int = 0  # set at boot
    obj_len: int = 0  # K_*_STACK_LEN(size)


@attrs.define
class MappedInfo:
    addr: int | None = None  # stack_info.mapped.addr (None == NULL)
    sz: int = 0  # stack_info.mapped.sz


@attrs.define
class StackInfo:
    start: int = 0
    size: int = 0
    delta: int = 0
    mapped: MappedInfo = attrs.field(factory=MappedInfo)


def _sorted_args(
    args: Mapping[str, Any] | Iterable[tuple[str, Any]],
) -> tuple[tuple[str, Any], ...]:
    """``Op.args`` as sorted (name, value) pairs, from a mapping or from pairs."""
    return tuple(sorted(dict(args).items()))


@attrs.frozen
class Op:
    """One step of a thread body. ``kind`` selects the meaning of the other fields:

    ===============  ==========================================================================
    push             push ``n`` bytes (word by word, as PUSH does)
    pop              pop ``n`` bytes
    call             call a function with a frame of ``n`` bytes (``where="bottom"``: a frame
                     reaching ``offset`` bytes past the bottom of the stack the thread runs on);
                     its ``prologue`` (``mmusim.hw.prologue.PROLOGUES``; "" = the kernel's
                     build default, ``Kernel.prologue``; ``probe`` = "probed") claims the frame;
                     the function writes its lowest local, runs ``body`` (``depth`` > 1: calls
                     itself ``depth`` deep, the innermost running ``body``), then returns
    touch            write a word at ``where`` + ``offset``; where is start | end | sp | front_guard
                     | rear_guard | mapped (stack_info.mapped.addr) -- of the running thread --
                     or bottom | top of the stack it runs on now (``body.current_stack``)
    write / read     write (read) a word at absolute address ``addr``, or at mapping ``target``
                     + ``offset`` (a k_mem_map region the body mapped)
    sleep            k_sleep(``n`` ticks); ``n == K_FOREVER`` sleeps forever
    yield            k_yield()
    abort_self       k_thread_abort(k_current_get())
    abort            k_thread_abort(``target``)
    return           return from the entry function (the thread exits: a self-abort)
    create           k_thread_create(``target``, stack ``stack``, body ``body``, ``user``,
                     ``prio``, delay ``n`` (K_NO_WAIT starts it, K_FOREVER does not))
    start / join / suspend / resume   on thread ``target``
    k_mem_map        map ``n`` bytes (``user``: K_MEM_PERM_USER) as mapping ``target``
    k_mem_unmap      unmap mapping ``target``
    exhaust          k_mem_map(``n``) as mappings ``target``0, 1, ... until NULL; record the count
    unmap_all        k_mem_unmap every mapping whose name starts with ``target``
    record           record fact ``target`` (see Kernel.fact) under name ``label``
    repeat           run ``body`` ``n`` times
    ===============  ==========================================================================

    Memory domains (``mmusim.kernel.domain``): ``mem_domain_init`` is k_mem_domain_init(``domain``,
    the partitions named in ``parts``); ``mem_domain_add_partition`` and
    ``mem_domain_remove_partition`` add or remove partition ``parts[0]`` of ``domain``;
    ``mem_domain_add_thread`` is k_mem_domain_add_thread(``domain``, thread ``target``).
    """

    kind: str
    n: int = 0
    target: str = ""
    where: str = ""
    offset: int = 0
    addr: int = 0
    probe: bool = False
    prologue: str = ""  # call: "unprobed" | "probed" | "checked"; "" = Kernel.prologue
    depth: int = 1  # call: how deep the function recurses
    user: bool = False
    prio: int = 0
    stack: str = ""
    label: str = ""
    body: tuple[Op, ...] = ()
    domain: str = ""  # a memory domain's name (mmusim.kernel.domain)
    parts: tuple[str, ...] = ()  # memory partitions, by name
    line: int = 0  # where the op came from (scenario file line), for messages
    # The arguments of an op a layer above the kernel adds (Kernel.extension_ops): given as a
    # mapping (or pairs), kept as sorted (name, value) pairs -- hashable, like every other field.
    args: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=_sorted_args)

    def arg(self, name: str, default: Any = None) -> Any:
        """The extension op argument ``name`` (``default`` if absent)."""
        return next((v for key, v in self.args if key == name), default)


@attrs.frozen
class Request:
    """A kernel call posted to a thread's mailbox (``Kernel.post``), served by its ``serve`` op:
    ``op`` runs if ``guard(kernel)`` holds when the thread takes it (else it is skipped)."""

    op: Op
    guard: Any = None  # Callable[[Kernel], bool] | None


@attrs.define(eq=False)
class KThread:
    """``struct k_thread``: the fields mmusim models."""

    name: str
    prio: int = 0
    options: int = 0
    state: ThreadState = ThreadState.PRESTART  # guarded by _sched_spinlock
    stack: StackObject | None = None  # stack_obj: the original object
    stack_info: StackInfo = attrs.field(factory=StackInfo)
    body: tuple[Op, ...] = ()
    cpu: int | None = None  # base.cpu: the CPU it runs (ran) on
    switch_handle: int | None = None  # published by arch_switch once the context is saved
    join_waiters: list[KThread] = attrs.field(factory=list)
    halt_waiters: list[KThread] = attrs.field(factory=list)  # SMP halt_queue: k_thread_suspend
    pended_on: KThread | None = None  # whose join (or halt) queue this thread waits on
    serial: int = 0  # order of definition (for a deterministic stand-in object address)
    wake_tick: int | None = None
    queue_seq: int = 0  # FIFO order among equal priorities (ready queue, sleepers)
    sp: int = 0
    psp: int = 0  # arch.psp: top of the privilege-elevation stack, in the ORIGINAL object
    cpl: int = 0
    resume_cpl: int = 0  # the CPL it resumes at when switched to without arch_switch's return
    is_idle: bool = False
    generation: int = 0  # how many times this thread object was created
    exit_reason: str = ""  # "returned", "aborted", "fatal: <reason>"
    gen: Any = attrs.field(
        default=None, repr=False
    )  # the running generator (its "stack" of frames)
    pending: Any = attrs.field(default=None, repr=False)  # the Point it is suspended at
    stack_extent: tuple[int, int] = (0, 0)  # the stack object as placed: kept after an unmap
    stack_ready: bool = False  # setup_thread_stack has finished (its guards are in place)
    mbox_wait: bool = False  # PENDING on its own mailbox (the ``serve`` op)
    escape: Any = attrs.field(default=None, repr=False)  # the StackEscape of the access in flight
    # Stacks a runtime moved under the thread (Go's copystack): (old lo, old hi, delta), in order;
    # a saved stack pointer inside a moved stack is relocated on return (body.relocated).
    stack_moves: list[tuple[int, int, int]] = attrs.field(factory=list, repr=False)
    # With USERSPACE (mmusim.kernel.domain); guarded by z_mem_domain_lock:
    mem_domain: KMemDomain | None = attrs.field(default=None, repr=False)  # mem_domain_info
    ptables: PageTables | None = attrs.field(default=None, repr=False)  # arch.ptables

    @property
    def is_user(self) -> bool:
        return bool(self.options & K_USER)

    # The tests below are the scheduler's hot path: ``int.__and__`` tests the bits without
    # building a ThreadState, as ``state & ThreadState.DEAD`` would (enum.Flag.__and__).

    @property
    def dead(self) -> bool:
        return bool(int.__and__(self.state, _DEAD))

    @property
    def halting(self) -> bool:
        """``is_halting()`` (kernel/sched.c): marked ABORTING or SUSPENDING by another CPU."""
        return bool(int.__and__(self.state, _HALTING))

    def describe(self) -> str:
        return f"thread {self.name!r}"


def switch_ready(t: KThread) -> Condition:
    """What ``z_sched_switch_spin(t)`` waits for: ``t``'s context is saved (its switch handle is
    published by ``arch_switch``), so another CPU may run it, or its stack may go."""
    return Condition(f"{t.name}'s switch_handle", lambda: t.switch_handle is not None)
