"""The complete search on several processes of one machine (``mmusim explore --workers N``).

Each worker runs ``explore``'s depth-first search on its own kernel. What they share lives in one
server process (a ``multiprocessing`` manager): the **visited set**, whose check-and-insert is
atomic (``_Shared.claim``: the rule ``explore`` applies to its own set), and a **pool of work**.
Work is shared by **stealing**: a worker with nothing to do says so; a busy worker, at its next
transition, gives away the remaining actions of the lowest frame on its stack that has some --
the biggest untouched subtree -- as a ``Frame`` that the idle worker replays from the root and
searches on. A schedule prefix travels, not a kernel: kernel routines are suspended generators,
which cannot be pickled, and a path replays in milliseconds.

Why the results agree with one process: sleep sets prune transitions, never states, so every
search that ends without a violation visits every reachable state, whatever its order; the count
of distinct states (the size of the shared set) is the same. A donated frame's sleep set lacks the
action its donor was searching at that moment; a smaller sleep set is sound (it only explores
more transitions), so transitions may differ. After a violation, the reported trace comes from
``minimal``, run in the calling process as ``mmusim explore`` does with one worker: the same
trace. How many states were visited before the first violation depends on the order, so it
differs between runs with several workers (as in TLC's multi-worker mode). ``--max-states`` is
refused with workers: its cut depends on the order too.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Any

from mmusim.explore.model import Model
from mmusim.explore.search import (
    Frame,
    Key,
    Result,
    SearchState,
    Stats,
    Stop,
    Violation,
    claim_in,
    explore,
    root_violation,
)

__all__ = ["explore_parallel"]

POLL = 0.002  # seconds an idle worker waits between asks for work
CHECK_EVERY = 16  # transitions between a busy worker's looks at the shared state


class _Shared:
    """The state the workers share, in the manager's server process (one thread per worker
    connection, hence the lock)."""

    def __init__(self, workers: int) -> None:
        self.lock = threading.Lock()
        self.visited: dict[bytes, tuple[frozenset[Key], int]] = {}
        self.pool: list[Frame] = []
        self.idle: set[int] = set()
        self.workers = workers
        self.stopped = False
        self.violation: Violation | None = None

    def claim(
        self, fp: bytes, sleep: frozenset[Key], pre: int
    ) -> tuple[bool, frozenset[Key], bool]:
        with self.lock:  # explore's rule, one worker at a time
            return claim_in(self.visited, fp, sleep, pre)

    def wanted(self) -> bool:
        """Is a worker waiting for work that the pool cannot give?"""
        with self.lock:
            return bool(self.idle) and not self.pool and not self.stopped

    def give(self, frame: Frame) -> None:
        with self.lock:
            self.pool.append(frame)

    def take(self, worker: int) -> Frame | str:
        """Work for ``worker``, or "wait" (others are busy), or "done" (all idle, nothing left;
        or stopped)."""
        with self.lock:
            if self.stopped:
                return "done"
            if self.pool:
                self.idle.discard(worker)
                return self.pool.pop()
            self.idle.add(worker)
            return "done" if len(self.idle) == self.workers else "wait"

    def busy(self, worker: int) -> None:
        with self.lock:
            self.idle.discard(worker)

    def report(self, v: Violation) -> None:
        with self.lock:
            if self.violation is None:
                self.violation = v
            self.stopped = True

    def is_stopped(self) -> bool:
        return self.stopped

    def result(self) -> tuple[int, Violation | None]:
        with self.lock:
            return len(self.visited), self.violation


class _Manager(BaseManager):
    pass


_Manager.register("Shared", _Shared)


def _donate(st: SearchState) -> Frame | None:
    """The remaining actions of the lowest frame that has some, as a frame of their own; the
    donor's frame is left with none."""
    for fr in st.stack:
        if fr.next < len(fr.options):
            gift = Frame(fr.path, fr.infos, dict(fr.sleep), fr.pre, fr.last, fr.acts,
                         fr.options, fr.next)  # fmt: skip
            fr.next = len(fr.options)
            return gift
    return None


def _worker(spec: tuple[str, tuple[str, ...], tuple[str, ...]], bound: int | None,
            worker: int, shared: Any, out: Any) -> None:  # fmt: skip
    scenario, extra, ignore = spec
    model = Model(scenario, extra, ignore=ignore)  # explore finds its root prefix once
    stats = Stats()
    complete = True
    calls = [0]

    def hook(st: SearchState) -> None:
        calls[0] += 1
        if calls[0] % CHECK_EVERY:
            return
        if shared.is_stopped():
            raise Stop
        if shared.wanted():
            gift = _donate(st)
            if gift is not None:
                shared.give(gift)

    first = worker == 0
    while True:
        if first:  # worker 0 starts at the root; the others steal
            state = SearchState(stats=stats)
            first = False
        else:
            got = shared.take(worker)
            if got == "done":
                break
            if got == "wait":
                time.sleep(POLL)
                continue
            assert isinstance(got, Frame)
            state = SearchState(stack=[got], stats=stats, started=True)
        r = explore(model, max_preemptions=bound, state=state, checkpoint=hook,
                    claim=shared.claim)  # fmt: skip
        complete = complete and r.complete
        if r.violation is not None:
            shared.report(r.violation)
            break
    out.put((worker, stats, complete))


def _collect(out: Any, procs: list[Any]) -> list[tuple[int, Stats, bool]]:
    """Each worker's (number, counters, complete); a worker that dies without them (a bug in
    mmusim: the search's own verdicts all end normally) raises instead of waiting for ever."""
    parts: list[tuple[int, Stats, bool]] = []
    while len(parts) < len(procs):
        try:
            parts.append(out.get(timeout=0.5))
        except queue.Empty:
            done = {w for w, _, _ in parts}
            dead = [w for w, p in enumerate(procs) if w not in done and p.exitcode not in (None, 0)]
            if dead:
                for p in procs:
                    p.terminate()
                raise RuntimeError(f"explore_parallel: worker {dead[0]} died (exit code "
                                   f"{procs[dead[0]].exitcode})") from None  # fmt: skip
    return parts


def explore_parallel(
    scenario: str | Path,
    extra_config: tuple[str, ...] = (),
    *,
    workers: int,
    ignore: tuple[str, ...] = (),
    max_preemptions: int | None = None,
) -> Result:
    """The complete search of ``explore`` on ``workers`` processes. Its result has the states of
    the whole search (the shared set's size), the transitions and executions of all workers, and
    the first violation a worker met (not a minimal one: ``minimal`` finds that)."""
    if workers < 1:
        raise ValueError(f"--workers: {workers} is out of range (at least 1)")
    t0 = time.perf_counter()
    model = Model(scenario, extra_config, ignore=ignore)
    root = root_violation(model)
    stats = Stats()
    if root is not None:
        stats.seconds = time.perf_counter() - t0
        return Result(root, stats, False, max_preemptions)
    ctx = multiprocessing.get_context("fork")
    with _Manager(ctx=ctx) as manager:
        shared = manager.Shared(workers)  # type: ignore[attr-defined]
        out = ctx.Queue()
        spec = (str(scenario), tuple(extra_config), tuple(ignore))
        procs = [ctx.Process(target=_worker, args=(spec, max_preemptions, w, shared, out),
                             daemon=True) for w in range(workers)]  # fmt: skip
        for p in procs:
            p.start()
        parts = _collect(out, procs)
        for p in procs:
            p.join()
        states, violation = shared.result()
    complete = all(c for _, _, c in parts) and violation is None
    for _, s, _ in parts:
        stats.transitions += s.transitions
        stats.executions += s.executions
        stats.replayed += s.replayed
        stats.max_depth = max(stats.max_depth, s.max_depth)
    stats.states = states
    stats.seconds = time.perf_counter() - t0
    return Result(violation, stats, complete, max_preemptions)
