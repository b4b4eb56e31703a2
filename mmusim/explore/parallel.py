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
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Any

import attrs

from mmusim.explore.model import Model
from mmusim.explore.search import (
    Claim,
    Frame,
    Key,
    Result,
    SearchState,
    Stats,
    Stop,
    Violation,
    claim_in,
    explore,
    root_result,
)
from mmusim.scenario import Scenario

__all__ = ["WorkerDied", "explore_parallel"]

POLL = 0.002  # seconds an idle worker waits between asks for work
CHECK_EVERY = 16  # transitions between a busy worker's looks at the shared state


class WorkerDied(RuntimeError):
    """A worker process ended without its results: killed (a SIGTERM to the whole process
    group, the kernel's out-of-memory killer), or a bug in mmusim."""


class VisitedSet:
    """The visited set, or one partition of it (``--dask`` splits it by fingerprint), where
    claims are atomic: in a server process, one thread serves each connection, hence the lock."""

    def __init__(self, visited: dict[bytes, tuple[frozenset[Key], int]] | None = None) -> None:
        self.lock = threading.Lock()
        self.visited: dict[bytes, tuple[frozenset[Key], int]] = visited or {}

    def claim(
        self, fp: bytes, sleep: frozenset[Key], pre: int
    ) -> tuple[bool, frozenset[Key], bool]:
        with self.lock:  # explore's rule, one worker at a time
            return claim_in(self.visited, fp, sleep, pre)

    def size(self) -> int:
        return len(self.visited)

    def copy(self) -> dict[bytes, tuple[frozenset[Key], int]]:
        """The whole set, for a checkpoint (the searches are paused)."""
        with self.lock:
            return dict(self.visited)


class WorkPool:
    """The work the workers share (stacks to search: a frame given away is a stack of one), who
    is idle, and the first violation. ``pause`` stops the searches with their work kept: each
    gives back its stack, for a checkpoint."""

    def __init__(self, workers: int, work: list[list[Frame]] | None = None) -> None:
        self.lock = threading.Lock()
        self.pool: list[list[Frame]] = list(work or [])
        self.idle: set[int] = set()
        self.workers = workers
        self.stopped = False
        self.paused = False
        self.violation: Violation | None = None
        self.counters: dict[int, tuple[int, int, int, int]] = {}  # see poll and progress

    def poll(self, worker: int, counters: tuple[int, int, int, int]) -> tuple[bool, bool]:
        """(Is the search stopped or paused?, is a worker waiting for work that the pool cannot
        give?): what a busy worker asks every ``CHECK_EVERY`` transitions, in one call. It brings
        its ``counters`` (transitions, executions, depth, max depth), for ``progress``."""
        with self.lock:
            self.counters[worker] = counters
            return self.stopped or self.paused, bool(self.idle) and not self.pool

    def progress(self) -> tuple[int, int, int, int, int]:
        """The workers' counters as last polled, added up (transitions, executions), or the
        largest (depth, max depth), and the stacks in the pool: for a progress line."""
        with self.lock:
            cs = list(self.counters.values()) or [(0, 0, 0, 0)]
            return (sum(c[0] for c in cs), sum(c[1] for c in cs), max(c[2] for c in cs),
                    max(c[3] for c in cs), len(self.pool))  # fmt: skip

    def give(self, stack: list[Frame]) -> None:
        with self.lock:
            self.pool.append(stack)

    def pause(self) -> None:
        with self.lock:
            self.paused = True

    def work(self) -> list[list[Frame]]:
        """The stacks left, for a checkpoint (the searches are paused)."""
        with self.lock:
            return list(self.pool)

    def take(self, worker: int) -> list[Frame] | str:
        """Work for ``worker``, or "wait" (others are busy), or "done" (all idle, nothing left;
        or stopped, or paused)."""
        with self.lock:
            if self.stopped or self.paused:
                return "done"
            if self.pool:
                self.idle.discard(worker)
                return self.pool.pop()
            self.idle.add(worker)
            return "done" if len(self.idle) == self.workers else "wait"

    def report(self, v: Violation | None) -> None:
        """Stop the search, with the violation a worker met (or none: the user stopped it)."""
        with self.lock:
            if self.violation is None:
                self.violation = v
            self.stopped = True

    def result(self) -> Violation | None:
        with self.lock:
            return self.violation


class RememberingClaim:
    """A worker's ``Claim`` on a shared visited set that answers, without asking it, what it
    would answer "no" to. What this worker learnt of a state -- the sleep set and preemptions of
    its own claims, searched or not -- bounds the shared entry from above: the entry only ever
    shrinks (``claim_in`` keeps the smaller sleep set and the fewer preemptions). So a claim
    whose sleep set and preemptions cover what this worker learnt would find the entry covered
    too, and be refused, without changing the entry: the answer is the shared set's own, one
    round trip fewer (a claim is one message to another process, or machine)."""

    def __init__(self, claim: Claim) -> None:
        self.claim = claim
        self.known: dict[bytes, tuple[frozenset[Key], int]] = {}
        self.asked = 0  # claims sent to the shared set
        self.saved = 0  # claims answered here

    def __call__(
        self, fp: bytes, sleep: frozenset[Key], pre: int
    ) -> tuple[bool, frozenset[Key], bool]:
        seen = self.known.get(fp)
        if seen is not None and seen[0] <= sleep and seen[1] <= pre:
            self.saved += 1
            return False, sleep, False
        self.asked += 1
        searched, keep, first = self.claim(fp, sleep, pre)
        bound = (keep, pre) if searched else (sleep, pre)  # the entry is within both
        self.known[fp] = bound if seen is None else (bound[0] & seen[0], min(bound[1], seen[1]))
        return searched, keep, first


class _Manager(BaseManager):
    pass


_Manager.register("VisitedSet", VisitedSet)
_Manager.register("WorkPool", WorkPool)


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


def search_worker(model: Model, bound: int | None, worker: int, pool: Any, claim: Claim,
                  check_every: int = CHECK_EVERY, start: bool = True) -> tuple[Stats, bool]:  # fmt: skip
    """One worker's part of a shared search: worker 0 starts at the root (if ``start``: a resumed
    search has its work in the pool), the others steal. ``pool`` is a ``WorkPool`` (or a proxy
    of one whose methods return its answers), polled every ``check_every`` transitions; ``claim``
    is the shared visited set's. Returns the worker's counters and whether its parts were
    complete."""
    stats = Stats()
    complete = True
    calls = [0]

    def hook(st: SearchState) -> None:
        calls[0] += 1
        if calls[0] % check_every:
            return
        counters = (stats.transitions, stats.executions, stats.depth, stats.max_depth)
        stopped, wanted = pool.poll(worker, counters)
        if stopped:
            raise Stop
        if wanted:
            gift = _donate(st)
            if gift is not None:
                pool.give([gift])

    first = start and worker == 0
    while True:
        if first:
            state = SearchState(stats=stats)
            first = False
        else:
            got = pool.take(worker)
            if got == "done":
                break
            if got == "wait":
                time.sleep(POLL)
                continue
            assert isinstance(got, list)
            state = SearchState(stack=got, stats=stats, started=True)
        r = explore(model, max_preemptions=bound, state=state, checkpoint=hook, claim=claim)
        complete = complete and state.complete
        if r.violation is not None:
            pool.report(r.violation)
            break
        if r.interrupted:  # stopped, or paused: what is left goes back (kept if paused)
            if state.stack:
                pool.give(state.stack)
            break
    return stats, complete


def _worker(spec: tuple[Scenario, tuple[str, ...], tuple[str, ...]], bound: int | None,
            worker: int, start: bool, visited: Any, pool: Any, out: Any) -> None:  # fmt: skip
    _ignore_sigint()  # Ctrl-C is the caller's: it pauses the search
    scenario, extra, ignore = spec
    model = Model(scenario, extra, ignore=ignore)  # explore finds its root prefix once
    claim = RememberingClaim(visited.claim)
    stats, complete = search_worker(model, bound, worker, pool, claim, start=start)
    out.put((worker, stats, complete))


def _ignore_sigint() -> None:
    """In a worker or the manager: Ctrl-C is the caller's (it pauses or stops the search), and
    SIGTERM ends the process as by default, not through a handler the caller's process had when
    it forked this one."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _collect(out: Any, procs: list[Any], tick: Callable[[], object],
             ) -> list[tuple[int, Stats, bool]]:  # fmt: skip
    """Each worker's (number, counters, complete); a worker that dies without them (a bug in
    mmusim: the search's own verdicts all end normally) raises instead of waiting for ever.
    ``tick`` is called about twice a second while the workers search."""
    parts: list[tuple[int, Stats, bool]] = []
    while len(parts) < len(procs):
        try:
            parts.append(out.get(timeout=0.5))
        except queue.Empty:
            tick()
            done = {w for w, _, _ in parts}
            dead = [w for w, p in enumerate(procs) if w not in done and p.exitcode not in (None, 0)]
            if dead:
                for p in procs:
                    p.terminate()
                raise WorkerDied(f"explore_parallel: worker {dead[0]} died (exit code "
                                   f"{procs[dead[0]].exitcode})") from None  # fmt: skip
    return parts


def explore_parallel(
    scenario: Scenario | str | Path,
    extra_config: tuple[str, ...] = (),
    *,
    workers: int,
    ignore: tuple[str, ...] = (),
    max_preemptions: int | None = None,
    state: SearchState | None = None,
    save: Callable[[SearchState], None] | None = None,
    every: float | Callable[[], float] = 60.0,
    stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[Stats], None] | None = None,
) -> Result:
    """The complete search of ``explore`` on ``workers`` processes. Its result has the states of
    the whole search (the shared set's size), the transitions and executions of all workers, and
    the first violation a worker met (not a minimal one: ``minimal`` finds that).

    Checkpoints (``--checkpoint`` with ``--workers``): with ``save``, the search pauses every
    ``every`` seconds (or ``every()``, asked at each round) and when ``stop()`` turns true
    (Ctrl-C, SIGTERM): each worker gives back its stack, and ``save`` gets the visited set, the
    stacks (``stack`` and ``more``) and the counters as one ``SearchState``; then it goes on,
    with new worker processes, or returns interrupted. A ``state`` (from ``checkpoint.load``; a
    one-process checkpoint too) is continued.
    ``on_progress`` gets the counters of the whole search about twice a second."""
    if workers < 1:
        raise ValueError(f"--workers: {workers} is out of range (at least 1)")
    st = state if state is not None else SearchState()
    t0 = time.perf_counter() - st.stats.seconds
    model = Model(scenario, extra_config, ignore=ignore)
    early = root_result(model, t0, max_preemptions)
    if early is not None:
        return early
    ctx = multiprocessing.get_context("fork")
    spec = (model.scenario, tuple(extra_config), tuple(ignore))

    def one_round(start: bool, pause_at: float, stop_: Callable[[], bool] | None) -> RoundResult:
        return _round(ctx, spec, max_preemptions, workers, start, st, pause_at, stop_,
                      on_progress, t0)  # fmt: skip

    return run_rounds(one_round, st, max_preemptions, t0, save, every, stop)


RoundResult = tuple[list[tuple[int, Stats, bool]], Violation | None, int, bool]
"""What one round of a shared search gives: each worker's (number, counters, complete), the
violation, the visited states and whether it paused."""


def run_rounds(one_round: Callable[[bool, float, Callable[[], bool] | None], RoundResult],
               st: SearchState, bound: int | None, t0: float,
               save: Callable[[SearchState], None] | None, every: float | Callable[[], float],
               stop: Callable[[], bool]) -> Result:  # fmt: skip
    """A shared search (``--workers`` or ``--dask``) from ``st``, as rounds: ``one_round(start,
    pause_at, stop)`` runs the searches until they end or pause (after ``pause_at`` seconds, or
    when ``stop()``: only with ``save``), and leaves in ``st`` the visited set and the stacks
    left. After a pause ``save`` gets ``st`` with the counters so far; then the next round goes
    on, or, after ``stop()``, the search returns interrupted."""
    while True:
        pause_at = (every() if callable(every) else every) if save is not None else float("inf")
        start = not st.started
        st.started = True
        parts, violation, size, paused = one_round(start, pause_at,
                                                   stop if save is not None else None)  # fmt: skip
        result = combine(parts, size, violation, bound, t0, base=st.stats)
        st.complete = st.complete and all(c for _, _, c in parts)
        if not paused or violation is not None or not (st.stack or st.more):
            result.complete = result.complete and st.complete
            return result
        st.stats = result.stats
        assert save is not None
        save(st)
        if stop():
            return Result(None, st.stats, False, bound, interrupted=True)


def _round(ctx: Any, spec: tuple[Scenario, tuple[str, ...], tuple[str, ...]], bound: int | None,
           workers: int, start: bool, st: SearchState, pause_at: float,
           stop: Callable[[], bool] | None, on_progress: Callable[[Stats], None] | None,
           t0: float) -> RoundResult:  # fmt: skip
    """The workers search from ``st`` (its visited set and its stacks) until the search ends or,
    after ``pause_at`` seconds or when ``stop()``, pauses: then ``st`` gets the visited set and
    the stacks left. Returns the workers' (number, counters, complete), the violation, the
    visited states and whether it paused."""
    manager = _Manager(ctx=ctx)
    manager.start(_ignore_sigint)  # Ctrl-C reaches the whole process group: it is the caller's
    procs: list[Any] = []
    try:
        visited = manager.VisitedSet(st.visited)  # type: ignore[attr-defined]
        pool = manager.WorkPool(workers, work_of(st))  # type: ignore[attr-defined]
        out = ctx.Queue()
        procs += [ctx.Process(target=_worker, daemon=True,
                              args=(spec, bound, w, start, visited, pool, out))
                  for w in range(workers)]  # fmt: skip
        for p in procs:
            p.start()
        tick = RoundTick(st, t0, pause_at, stop, on_progress, pause=pool.pause,
                         size=visited.size, progress=pool.progress)  # fmt: skip
        try:
            parts = _collect(out, procs, tick)
            for p in procs:
                p.join()
            violation, size = pool.result(), visited.size()
            if tick.paused and violation is None:
                keep_left(st, visited.copy(), pool.work())
        except (OSError, EOFError) as e:  # the manager is gone: killed with its process group
            raise WorkerDied(f"explore_parallel: the process holding the visited set ended "
                             f"({type(e).__name__})") from None  # fmt: skip
    finally:  # an interrupted caller (Ctrl-C without --checkpoint): the workers go first, quietly,
        for p in procs:  # before the manager whose proxies they would find gone
            if p.is_alive():
                p.terminate()
                p.join(5)
        manager.shutdown()
    return parts, violation, size, tick.paused


def work_of(st: SearchState) -> list[list[Frame]]:
    """The stacks ``st`` has to search, for a round's work pool."""
    return ([st.stack] if st.stack else []) + st.more


def keep_left(st: SearchState, visited: dict[bytes, tuple[frozenset[Key], int]],
              left: list[list[Frame]]) -> None:  # fmt: skip
    """After a round paused: ``st`` takes the visited set and the stacks left in the pool."""
    st.visited = visited
    st.stack, st.more = (left[0], left[1:]) if left else ([], [])


class RoundTick:
    """What a round does about twice a second while its searches run: once ``pause_at`` seconds
    have passed or ``stop()`` (with ``--checkpoint``: Ctrl-C), it pauses the work pool (then
    ``paused``); with ``on_progress``, it reports the counters of the whole search -- the rounds
    before (``st.stats``), the visited set's ``size()`` and the workers' counters as the pool's
    ``progress()`` has them. ``pause``, ``size`` and ``progress`` reach the pool and the visited
    set however the round holds them (a manager's proxies, Dask actors)."""

    def __init__(self, st: SearchState, t0: float, pause_at: float,
                 stop: Callable[[], bool] | None, on_progress: Callable[[Stats], None] | None, *,
                 pause: Callable[[], object], size: Callable[[], int],
                 progress: Callable[[], tuple[int, int, int, int, int]]) -> None:  # fmt: skip
        self.st, self.t0, self.stop, self.on_progress = st, t0, stop, on_progress
        self.pause_at = time.monotonic() + pause_at
        self.pause, self.size, self.progress = pause, size, progress
        self.paused = False

    def __call__(self) -> None:
        if not self.paused and (time.monotonic() >= self.pause_at or (self.stop and self.stop())):
            self.pause()
            self.paused = True
        if self.on_progress is not None:
            transitions, executions, depth, max_depth, queue = self.progress()
            base = self.st.stats
            self.on_progress(Stats(
                executions=base.executions + executions, states=self.size(), depth=depth,
                transitions=base.transitions + transitions, queue=queue,
                max_depth=max(base.max_depth, max_depth), replayed=base.replayed,
                seconds=time.perf_counter() - self.t0))  # fmt: skip


def combine(parts: list[tuple[int, Stats, bool]], states: int, violation: Violation | None,
            bound: int | None, t0: float, base: Stats | None = None) -> Result:  # fmt: skip
    """The result of a shared search from its workers' (number, counters, complete), added to
    the counters of the rounds before (``base``: a resumed search's)."""
    stats = attrs.evolve(base) if base is not None else Stats()
    complete = all(c for _, _, c in parts) and violation is None
    for _, s, _ in parts:
        stats.transitions += s.transitions
        stats.executions += s.executions
        stats.replayed += s.replayed
        stats.max_depth = max(stats.max_depth, s.max_depth)
    stats.states = states
    stats.seconds = time.perf_counter() - t0
    return Result(violation, stats, complete, bound)
