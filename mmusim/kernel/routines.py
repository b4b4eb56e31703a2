"""Kernel routines as generators that stop at every shared access.

docs/design.md says why, under "One kernel, many drivers".

A kernel routine that touches shared state -- a spinlock, the cleanup slot, a thread's state, a
PTE, a TLB, an IPI, a running thread's stack -- is a generator. Just before each such access it
``yield``s a ``Point`` naming the routine and the access (``Point("k_thread_abort_cleanup",
"drain pending slot")``). Whoever drives the routine decides when it may go on:

* a direct API call runs it to completion (``run``);
* the kernel's scheduler interleaves the CPUs' routines, step by step, in a default or seeded order;
* the explorer (``mmusim.explore``) tries every order.

There is no second model of the kernel for exploration: all drivers run these same routines.

A ``Point`` may name something it waits for (``wait``): a spinlock to be free, a thread's switch
handle to be published. Such a step is *enabled* only when ``wait.ready()`` -- there are no
busy-wait steps, and a state where nothing is enabled while work remains is a deadlock that can be
reported as who waits for what.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Protocol, TypeVar

import attrs

T = TypeVar("T")


class KernelAssert(Exception):
    """A kernel assertion failed (Zephyr's ``__ASSERT``): API misuse or a broken kernel invariant.

    The message starts with the function that asserted, as Zephyr's assertion messages do.
    """


class Waitable(Protocol):
    def ready(self) -> bool: ...

    def describe(self) -> str: ...


# A footprint: what the step that resumes from a Point reads and writes, as resource ids such as
# ("lock", name), ("pte", page), ("pt", va >> 21), ("mem", page), ("ipi", cpu), ("sh", thread).
Footprint = tuple[frozenset[tuple[object, ...]], frozenset[tuple[object, ...]]]
LOCAL: Footprint = (frozenset(), frozenset())  # touches nothing another CPU can see


def writes(*res: tuple[object, ...]) -> Footprint:
    return (frozenset(), frozenset(res))


def reads(*res: tuple[object, ...]) -> Footprint:
    return (frozenset(res), frozenset())


def touches_pages(pages: object) -> Footprint:
    """A memory access to these linear pages: it reads their PTEs (and the page-table pages that
    hold them), and writes their data and A/D bits."""
    ps = list(pages)  # type: ignore[call-overload]
    return (
        frozenset([("pte", p) for p in ps] + [("pt", p >> 21) for p in ps]),
        frozenset(("mem", p) for p in ps),
    )


def pages_of(lo: int, hi: int) -> range:
    """Linear page bases of the bytes [lo, hi)."""
    return range(lo & ~0xFFF, hi, 0x1000) if hi > lo else range(0)


def pte_write(va: int) -> Footprint:
    """Writing (or clearing) the PTE of ``va``: conflicts with every walk through that page table."""
    page = va & ~0xFFF
    return (frozenset(), frozenset({("pte", page), ("pt", page >> 21)}))


@attrs.frozen(slots=True)
class Point:
    """An interleaving point: ``routine`` is about to perform the shared access ``label``.

    ``res`` declares the (reads, writes) of the step that resumes from here, for the explorer's
    partial-order reduction; None (the default) means "may touch anything", which is always sound.
    Locks the CPU holds are added by the explorer: what a lock guards is represented by the lock.
    """

    routine: str
    label: str
    wait: Waitable | None = None
    res: Footprint | None = attrs.field(default=None, eq=False, repr=False)

    def enabled(self) -> bool:
        return self.wait is None or self.wait.ready()

    def __str__(self) -> str:
        return f"{self.routine}: {self.label}"


# A kernel routine: yields Points, finally returns a value.
Routine = Generator[Point, None, T]


def run(routine: Generator[Point, None, T]) -> T:
    """Run a routine to completion, as a direct (single-CPU, uninterrupted) API call does.

    A point that waits for something not ready can never become ready in a direct call: that is a
    deadlock, reported with what was awaited.
    """
    try:
        point = next(routine)
        while True:
            if not point.enabled():
                assert point.wait is not None
                raise KernelAssert(
                    f"{point.routine}: deadlock in a direct call: waits for {point.wait.describe()}"
                )
            point = routine.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


@attrs.frozen(slots=True)
class Condition:
    """A named predicate a step can wait for (e.g. a switch handle to be published)."""

    text: str
    predicate: object  # Callable[[], bool]; typed loosely to stay hashable with attrs

    def ready(self) -> bool:
        return bool(self.predicate())  # type: ignore[operator]

    def describe(self) -> str:
        return self.text
