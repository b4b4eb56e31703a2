"""Thread specs and body steps for property tests, with Hypothesis strategies.

A ``ThreadSpec`` says what ``k_thread_create`` gets: the stack size (which picks a stack object of
that size), user or kernel, the priority, and a body -- a tuple of steps run on the thread's real
stack through the MMU. Every value prints as the constructor call that rebuilds it, so a falsifying
example Hypothesis prints is code you can paste::

    ThreadSpec(stack_size=5000, body=(Push(n=4096), Underflow(offset=8)))

Steps (each turns into the kernel's body ops, ``mmusim.kernel.thread.Op``):

=========================  ========================================================================
``Push(n)``                 push ``n`` bytes, a word at a time (a gradual overflow when ``n`` is big)
``Pop(n)``                  pop ``n`` bytes (past the top of the stack: an underflow)
``Call(frame, probe)``      call a function with a ``frame``-byte frame; ``probe`` touches every page
                            on the way down (-fstack-clash-protection). Bigger than a page and not
                            probed, it can jump a one-page guard
``Alloca(n)``               ``alloca(n)`` / a VLA: lower SP by ``n``, write the lowest byte, unprobed
``Underflow(offset)``       write a word ``offset`` bytes above the top of the stack (stack_info end)
``Sleep(ticks)``            ``k_sleep(ticks)``
``Yield()``                 ``k_yield()``
=========================  ========================================================================
"""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import strategies as st

from mmusim.kernel import PAGE, Op

__all__ = [
    "DEFAULT_STACK_SIZES",
    "Alloca",
    "Call",
    "Pop",
    "Push",
    "Sleep",
    "Step",
    "ThreadSpec",
    "Underflow",
    "Yield",
    "schedules",
    "steps",
    "thread_specs",
]

DEFAULT_STACK_SIZES = (1024, 4096, 5000)
"""Sizes of the stack objects ``KernelMachine`` defines: below a page, a page, and not a page
multiple (so K_*_STACK_LEN must round it)."""


@attrs.frozen
class Push:
    n: int

    def ops(self) -> tuple[Op, ...]:
        return (Op("push", self.n),)


@attrs.frozen
class Pop:
    n: int

    def ops(self) -> tuple[Op, ...]:
        return (Op("pop", self.n),)


@attrs.frozen
class Call:
    frame: int
    probe: bool = False

    def ops(self) -> tuple[Op, ...]:
        return (Op("call", self.frame, probe=self.probe),)


@attrs.frozen
class Alloca:
    n: int

    def ops(self) -> tuple[Op, ...]:
        # Same machine effect as an unprobed call: sub sp, n; write the lowest byte (no probes).
        return (Op("call", self.n, probe=False),)


@attrs.frozen
class Underflow:
    offset: int = 0

    def ops(self) -> tuple[Op, ...]:
        return (Op("touch", where="end", offset=self.offset),)


@attrs.frozen
class Sleep:
    ticks: int = 1

    def ops(self) -> tuple[Op, ...]:
        return (Op("sleep", self.ticks),)


@attrs.frozen
class Yield:
    def ops(self) -> tuple[Op, ...]:
        return (Op("yield"),)


Step = Push | Pop | Call | Alloca | Underflow | Sleep | Yield


@attrs.frozen
class ThreadSpec:
    """What a thread is created with. ``kernel_stack`` picks a ``K_KERNEL_STACK_DEFINE`` object
    (no user mode, no privilege stack); user threads always get a ``K_THREAD_STACK_DEFINE`` one."""

    stack_size: int = 4096
    user: bool = False
    prio: int = 0
    kernel_stack: bool = False
    body: tuple[Step, ...] = ()

    def ops(self) -> tuple[Op, ...]:
        return tuple(op for step in self.body for op in step.ops())


def steps(*, overflow: bool = True) -> st.SearchStrategy[Step]:
    """Body steps, overflow patterns included (``overflow=False``: only ones that stay inside a
    stack of at least a page). Sizes cluster around page multiples, where guards sit."""
    word_multiple = st.integers(1, 2 * PAGE // 8).map(lambda w: 8 * w)
    near_page = st.sampled_from([PAGE - 64, PAGE, PAGE + 64, 2 * PAGE - 64, 2 * PAGE + 64])
    size = st.one_of(word_multiple, near_page)
    small = st.integers(1, 64).map(lambda w: 8 * w)
    calm: list[st.SearchStrategy[Any]] = [
        small.map(Push),
        st.builds(Call, small, st.booleans()),
        st.integers(1, 3).map(Sleep),
        st.just(Yield()),
    ]
    if not overflow:
        return st.one_of(*calm)
    wild: list[st.SearchStrategy[Any]] = [
        size.map(Push),  # gradual push
        st.builds(Call, size, st.booleans()),  # a frame larger than a page
        size.map(Alloca),
        st.integers(0, PAGE // 8 - 1).map(lambda w: Underflow(8 * w)),
        st.integers(1, 4).map(lambda w: Pop(8 * w)),
    ]
    return st.one_of(*wild, *calm)


def thread_specs(
    stack_sizes: tuple[int, ...] = DEFAULT_STACK_SIZES,
    *,
    user: bool | None = None,
    max_steps: int = 4,
    overflow: bool = True,
) -> st.SearchStrategy[ThreadSpec]:
    """Thread specs over ``stack_sizes``; ``user`` None draws both kinds of thread."""
    users = st.booleans() if user is None else st.just(user)
    return st.builds(
        ThreadSpec,
        stack_size=st.sampled_from(stack_sizes),
        user=users,
        prio=st.sampled_from([0, 1, -1]),
        kernel_stack=st.booleans(),
        body=st.lists(steps(overflow=overflow), max_size=max_steps).map(tuple),
    )


def schedules() -> st.SearchStrategy[int | None]:
    """How ``KernelMachine.run`` orders the CPUs: None is round-robin (what shrinking tends to),
    an integer seeds a random order."""
    return st.none() | st.integers(0, 2**16)
