"""Exhaustive exploration of a scenario's interleavings, and minimal counterexamples.

Two searches, both over the real kernel (re-executed from a fresh boot for every schedule, since
generator frames cannot be copied -- re-execution, as in Loom and CHESS):

``explore``: depth-first, complete for the scenario; its stack is data (``SearchState``), so a
search can be saved and resumed (``mmusim.explore.checkpoint``). Equivalent interleavings are pruned by
**sleep sets** (two actions of different CPUs whose footprints do not conflict commute, so only one
order is explored) and by a **fingerprint cache** of visited states (a state revisited with a sleep
set that is not smaller is not explored again). A state where no action is enabled while a CPU
waits for something is a deadlock; every state is checked against the kernel invariants.

``minimal``: uniform-cost search ordered by (preemptions, steps), so the first violation it meets
has the fewest preemptions and then the fewest steps. A preemption is a move from CPU i to CPU j
while CPU i still had an enabled action; a switch forced because CPU i blocked is free.
Both accept ``max_preemptions``.

Why sleep sets and a cache rather than DPOR: each Point declares its footprint, which makes sleep
sets cheap and exact, and the fingerprint cache merges the many paths that reach one state --
measured on the two-CPU self-abort race (docs/explore.md).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

import attrs

from mmusim.explore.model import Action, Model, StepInfo, step_bound_message
from mmusim.kernel import Footprint, Kernel, KernelAssert


@attrs.define
class Stats:
    executions: int = 0  # boots (each schedule is re-executed from a fresh boot)
    transitions: int = 0
    states: int = 0  # distinct fingerprints
    max_depth: int = 0
    seconds: float = 0.0
    depth: int = 0  # of the state visited last (for progress display)
    queue: int = 0  # states waiting to be visited (minimal's heap; for progress display)
    raw_interleavings: int = 0  # the interleavings without any reduction (an estimate, see below)
    replayed: int = 0  # steps re-executed from the root to get back to a state (not transitions)

    @property
    def states_per_second(self) -> float:
        return self.states / self.seconds if self.seconds else 0.0

    @property
    def transitions_per_second(self) -> float:
        return self.transitions / self.seconds if self.seconds else 0.0


@attrs.frozen
class Violation:
    kind: str  # "invariant", "invariant at the end", "kernel assert", "deadlock", "step bound"
    messages: tuple[str, ...]
    schedule: tuple[Action, ...]  # from the exploration root
    steps: tuple[StepInfo, ...]
    preemptions: int


@attrs.define
class Result:
    violation: Violation | None
    stats: Stats
    complete: bool  # False if a state or preemption bound cut the search
    bound: int | None  # max_preemptions used
    interrupted: bool = False  # stopped by explore's checkpoint hook, to be resumed

    @property
    def verdict(self) -> str:
        if self.violation is not None:
            return "violation"
        if self.interrupted:
            return "interrupted"
        return "pass" if self.complete else "pass (bounded)"


def assert_message(e: KernelAssert | str) -> str:
    """The message of a "kernel assert" violation: the scenario reached a Zephyr assertion."""
    return f"the scenario makes Zephyr assert: {e}"


def root_violation(model: Model) -> Violation | None:
    """The violation when the default schedule makes the kernel assert before the exploration root
    (``Model.root_assert``): the root is then the boot, and the trace is that schedule's steps."""
    model.find_root()
    if model.root_assert is None:
        return None
    kind, message, steps, pre = model.root_assert
    schedule = tuple((s.cpu, s.kind) for s in steps)
    text = assert_message(message) if kind == "kernel assert" else message
    return Violation(kind, (text,), schedule, steps, pre)


def root_result(model: Model, t0: float, bound: int | None) -> Result | None:
    """The result of a search whose root is already a violation (``root_violation``), timed from
    ``t0``; None when the search has states to visit."""
    root = root_violation(model)
    return None if root is None else _done(root, Stats(), t0, bound)


def over_step_bound(model: Model, k: Kernel) -> bool:
    """True once an execution that can still go on has taken the scenario's max_steps."""
    return k.steps >= model.max_steps


def independent(a: Footprint | None, b: Footprint | None) -> bool:
    """Two actions of different CPUs commute if neither writes what the other reads or writes.
    Two actions of one CPU never do, whatever their footprints: taking an interrupt before or
    after the CPU's next step are two different runs of that CPU (the caller checks the CPUs)."""
    if a is None or b is None:
        return False
    ra, wa = a
    rb, wb = b
    return not (wa & rb or wa & wb or wb & ra)


class _Runner:
    """Keeps one live kernel and replays schedules into it from a fresh boot when needed."""

    def __init__(self, model: Model, stats: Stats) -> None:
        self.model = model
        self.stats = stats
        self.live: Kernel | None = None
        self.path: tuple[Action, ...] = ()

    def goto(self, path: tuple[Action, ...]) -> Kernel:
        if self.live is None or self.path != path:
            if (
                self.live is not None
                and len(path) > len(self.path)
                and path[: len(self.path)] == self.path
            ):
                k = self.live
                rest = path[len(self.path) :]
            else:
                k = self.model.reset()
                self.stats.executions += 1
                rest = path
            self.stats.replayed += len(rest)
            for a in rest:
                self.model.step(k, a)
            self.live, self.path = k, path
        return self.live

    def advance(self, path: tuple[Action, ...], a: Action) -> Kernel:
        k = self.goto(path)
        self.path = path + (a,)
        self.stats.transitions += 1
        self.model.step(k, a)  # may raise KernelAssert: the caller reports it
        return k

    def drop(self) -> None:
        self.live = None


def _preempt(acts: list[Action], last_cpu: int | None, a: Action) -> int:
    if last_cpu is None or a[0] == last_cpu or a[0] < 0:
        return 0
    return 1 if any(x[0] == last_cpu for x in acts) else 0


def _terminal(model: Model, k: Kernel) -> tuple[str, tuple[str, ...]] | None:
    """A state with nothing enabled: a deadlock (who waits for what), or the quiescent end, where
    the checks that only judge a finished run apply too (no stack mapping lost or leaked)."""
    try:
        k.check_deadlock()
    except KernelAssert as e:
        return ("deadlock", (str(e),))
    problems = model.end_violations(k)
    return ("invariant at the end", tuple(problems)) if problems else None


Key = tuple[int, str, str]
"""An action's identity across states (``StepInfo.key``): what sleep sets hold."""
Option = tuple[Action, StepInfo, Footprint | None]


@attrs.define
class Frame:
    """One state on the depth-first stack: how it was reached, its sleep set, the actions enabled
    in it (with what each touches) and how far the search has gone through them. ``pending`` is
    the action whose subtree is being searched: it joins the sleep set when the search returns."""

    path: tuple[Action, ...]
    infos: tuple[StepInfo, ...]
    sleep: dict[Key, Footprint | None]
    pre: int
    last: int | None
    acts: list[Action]
    options: list[Option]
    next: int = 0
    pending: tuple[Key, Footprint | None] | None = None


@attrs.define
class SearchState:
    """Everything ``explore`` needs to go on: the visited states (fingerprint -> the sleep set and
    the fewest preemptions it was explored with), the stack, the counters. Between two iterations
    of its loop it is consistent, which is where ``mmusim.explore.checkpoint`` saves it."""

    visited: dict[bytes, tuple[frozenset[Key], int]] = attrs.field(factory=dict)
    stack: list[Frame] = attrs.field(factory=list)
    stats: Stats = attrs.field(factory=Stats)
    complete: bool = True
    started: bool = False
    found: list[Violation] = attrs.field(factory=list)
    # Stacks still to search after ``stack``: the work of a search that several workers shared
    # (``mmusim.explore.parallel``), saved by a checkpoint; each is searched as ``stack`` is.
    more: list[list[Frame]] = attrs.field(factory=list)


Claim = Callable[[bytes, frozenset[Key], int], tuple[bool, frozenset[Key], bool]]
"""``claim(fingerprint, sleep set, preemptions)`` -> (search the state?, the part of the sleep set
to keep, is it new?): the visited-set rule of ``explore``, kept by someone else."""


# The visited set's entries, one object each: a search of millions of states meets a few thousand
# distinct (sleep set, preemptions) pairs (5,975 in the first 828,212 states of
# race_self_abort_3x3), so sharing them takes the visited set from about 440 to about 100 bytes a
# state. Only memory: a pair is equal to its shared copy.
_ENTRIES: dict[tuple[frozenset[Key], int], tuple[frozenset[Key], int]] = {}


def visited_entry(sleep: frozenset[Key], pre: int) -> tuple[frozenset[Key], int]:
    """The entry ``(sleep, pre)`` of a visited set, shared with every equal one."""
    entry = (sleep, pre)
    if len(_ENTRIES) >= 1 << 20:  # a bound on a pathological search; sharing is only memory
        _ENTRIES.clear()
    return _ENTRIES.setdefault(entry, entry)


def claim_in(
    visited: dict[bytes, tuple[frozenset[Key], int]], fp: bytes, sleep: frozenset[Key], pre: int
) -> tuple[bool, frozenset[Key], bool]:
    """The visited-set rule of ``explore`` (a ``Claim`` over ``visited``): a state seen before
    with a sleep set no larger and no more preemptions is not searched again; otherwise it is,
    with only the sleeping actions that also slept the last time, and ``visited`` remembers the
    smaller sleep set and the fewer preemptions."""
    seen = visited.get(fp)
    if seen is not None:
        if seen[0] <= sleep and seen[1] <= pre:
            return False, sleep, False
        sleep = frozenset(k for k in sleep if k in seen[0])
    visited[fp] = visited_entry(sleep, min(pre, seen[1]) if seen else pre)
    return True, sleep, seen is None


class Stop(Exception):
    """Raised by ``explore``'s ``checkpoint`` hook to end the search where it stands (``explore``
    returns with ``Result.interrupted``); the ``SearchState`` can then be saved and resumed."""


def explore(
    model: Model,
    *,
    max_preemptions: int | None = None,
    max_states: int | None = None,
    on_progress: Callable[[Stats], None] | None = None,
    state: SearchState | None = None,
    checkpoint: Callable[[SearchState], None] | None = None,
    claim: Claim | None = None,
) -> Result:
    """Depth-first search with sleep sets and a fingerprint cache; stops at the first violation.

    The search keeps its stack as data (``SearchState``), not as Python frames: pass a ``state``
    (a fresh one, or one a checkpoint file held) to see it or to go on with it. ``checkpoint``
    is called with the state at every consistent point (before each transition); it may save it,
    and raise ``Stop`` to end the search there. A resumed search visits the same states and takes
    the same transitions as one that was never stopped. ``claim`` replaces ``state.visited`` by
    a visited set shared with other searches (``mmusim.explore.parallel``)."""
    st = state if state is not None else SearchState()
    stats = st.stats
    t0 = time.perf_counter() - stats.seconds
    runner = _Runner(model, stats)
    root = root_violation(model)
    if root is not None:
        return _done(root, stats, t0, max_preemptions)

    def enter(path: tuple[Action, ...], infos: tuple[StepInfo, ...],
              sleep: dict[Key, Footprint | None], pre: int, last: int | None) -> Frame | None:  # fmt: skip
        """Visit the state ``path`` leads to: the frame to search from it, or None (seen with a
        sleep set no larger, a bound, or the end of the search: a violation, a terminal state)."""
        k = runner.goto(path)
        fp = model.fingerprint(k)
        if claim is not None:  # a visited set shared with other workers (mmusim.explore.parallel)
            go, kept, new = claim(fp, frozenset(sleep), pre)
        else:
            new = fp not in st.visited
            if new and max_states is not None and stats.states >= max_states:
                st.complete = False  # a new state past the bound: not searched, not counted
                return None
            go, kept, _ = claim_in(st.visited, fp, frozenset(sleep), pre)
        if not go:
            return None
        sleep = {key: f for key, f in sleep.items() if key in kept}
        if new:
            stats.states += 1
        stats.depth = len(path)
        stats.max_depth = max(stats.max_depth, stats.depth)
        stats.queue = len(st.stack)  # the states on the stack, some of their actions still to do
        if on_progress is not None and new:
            on_progress(stats)
        # The invariants are functions of the state: one seen before held them (or the search
        # would have stopped there), so only a new state is checked.
        problems = model.violations(k) if new else []
        if problems:
            st.found.append(Violation("invariant", tuple(problems), path, infos, pre))
            return None
        acts = model.actions(k)
        if not acts:
            end = _terminal(model, k)
            if end is not None:
                st.found.append(Violation(end[0], end[1], path, infos, pre))
            return None
        if over_step_bound(model, k):
            st.found.append(Violation("step bound", (step_bound_message(model.max_steps),), path,
                                      infos, pre))  # fmt: skip
            return None
        options = [(a, model.info(k, a), model.footprint(k, a)) for a in acts]
        return Frame(path, infos, sleep, pre, last, acts, options)

    if not st.started:
        st.started = True
        first = enter((), (), {}, 0, None)
        if first is not None:
            st.stack.append(first)
    interrupted = False
    while (st.stack or st.more) and not st.found:
        if not st.stack:
            st.stack = st.more.pop(0)
        if checkpoint is not None:  # a consistent point: the hook may save, stop or give work
            stats.seconds = time.perf_counter() - t0
            try:
                checkpoint(st)
            except Stop:
                interrupted = True
                break
        fr = st.stack[-1]
        if fr.pending is not None:  # back from the subtree of fr.pending: it joins the sleep set
            key, f = fr.pending
            fr.sleep[key] = f
            fr.pending = None
        if fr.next >= len(fr.options):
            st.stack.pop()
            continue
        a, info, fpnt = fr.options[fr.next]
        fr.next += 1
        if info.key in fr.sleep:
            continue
        p2 = fr.pre + _preempt(fr.acts, fr.last, a)
        if max_preemptions is not None and p2 > max_preemptions:
            st.complete = False
            continue
        # An action stays asleep only if it commutes with ``a``: another CPU's, footprints apart.
        # (An IPI of the CPU that steps wakes up: taken after the step it is another run.)
        child_sleep = {
            key: f for key, f in fr.sleep.items() if key[0] != a[0] and independent(f, fpnt)
        }
        try:
            runner.advance(fr.path, a)
        except KernelAssert as e:
            st.found.append(Violation("kernel assert", (assert_message(e),), fr.path + (a,),
                                      fr.infos + (info,), p2))  # fmt: skip
            runner.drop()
            break
        fr.pending = (info.key, fpnt)
        child = enter(fr.path + (a,), fr.infos + (info,), child_sleep, p2,
                      a[0] if a[0] >= 0 else fr.last)  # fmt: skip
        if child is not None:
            st.stack.append(child)
    stats.seconds = time.perf_counter() - t0
    found = st.found[0] if st.found else None
    done = not interrupted and not st.found and st.complete
    return Result(found, stats, done, max_preemptions, interrupted=interrupted)


def minimal(model: Model, *, max_preemptions: int | None = None, max_states: int | None = None,
            on_progress: Callable[[Stats], None] | None = None) -> Result:  # fmt: skip
    """Uniform-cost search by (preemptions, steps): the first violation found is minimal."""
    stats = Stats()
    t0 = time.perf_counter()
    runner = _Runner(model, stats)
    root = root_violation(model)
    if root is not None:
        return _done(root, stats, t0, max_preemptions)
    best: dict[tuple[bytes, int | None], tuple[int, int]] = {}
    heap: list[tuple[int, int, int, tuple[Action, ...], tuple[StepInfo, ...], int | None]] = []
    seq = 0
    heapq.heappush(heap, (0, 0, seq, (), (), None))
    complete = True
    while heap:
        pre, nsteps, _, path, infos, last = heapq.heappop(heap)
        try:
            k = runner.goto(path)
        except KernelAssert as e:
            v = Violation("kernel assert", (assert_message(e),), path, infos, pre)
            return _done(v, stats, t0, max_preemptions)
        fp = model.fingerprint(k)
        key = (fp, last)
        if key in best:
            continue
        if max_states is not None and len(best) >= max_states:
            complete = False  # a new state past the bound: not searched, not counted
            break
        best[key] = (pre, nsteps)
        stats.states = len(best)
        stats.depth = nsteps
        stats.max_depth = max(stats.max_depth, nsteps)
        if on_progress is not None:
            stats.queue = len(heap)
            on_progress(stats)
        problems = model.violations(k)
        if problems:
            return _done(Violation("invariant", tuple(problems), path, infos, pre), stats, t0,
                         max_preemptions)  # fmt: skip
        acts = model.actions(k)
        if not acts:
            end = _terminal(model, k)
            if end is not None:
                return _done(Violation(end[0], end[1], path, infos, pre), stats, t0,
                             max_preemptions)  # fmt: skip
            continue
        if over_step_bound(model, k):
            v = Violation("step bound", (step_bound_message(model.max_steps),), path, infos, pre)
            return _done(v, stats, t0, max_preemptions)
        for a in acts:
            p2 = pre + _preempt(acts, last, a)
            if max_preemptions is not None and p2 > max_preemptions:
                complete = False
                continue
            seq += 1
            stats.transitions += 1
            heapq.heappush(heap, (p2, nsteps + 1, seq, path + (a,), infos + (model.info(k, a),),
                                  a[0] if a[0] >= 0 else last))  # fmt: skip
    stats.seconds = time.perf_counter() - t0
    return Result(None, stats, complete, max_preemptions)


def _done(v: Violation, stats: Stats, t0: float, bound: int | None) -> Result:
    stats.seconds = time.perf_counter() - t0
    return Result(v, stats, False, bound)
