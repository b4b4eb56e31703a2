"""The complete search on a Dask cluster (``mmusim explore --dask ADDRESS``).

The same search as ``--workers`` (``mmusim.explore.parallel``), on the processes of a running
``dask.distributed`` cluster, which may span machines:

- the **visited set** is split by fingerprint into one ``VisitedSet`` per Dask worker, each a Dask
  *actor* living on its worker: a state's owner is its fingerprint modulo the number of parts, as
  TLC's fingerprint servers own their share of the fingerprints. A claim is one message to the
  owner; each search remembers what it learnt (``RememberingClaim``) and asks only when the answer
  could be "search it";
- one ``WorkPool`` actor holds the work given away and the first violation; searches steal the
  lowest untouched frame of a busy one, as ``--workers`` does;
- one **search** task per worker thread runs ``search_worker`` on its own kernel, built from the
  scenario as this process loaded it (the file need not exist on the workers). A frame travels as
  a schedule prefix, replayed there: kernel routines are suspended generators and cannot be
  pickled.

The verdict and, for a search that ends without a violation, the count of distinct states are
those of one process (sleep sets prune transitions, never states); ``tests/test_explore_dask.py``
checks them on a ``LocalCluster`` the test starts. Before searching, every worker must run this
very mmusim code (the hash ``--resume`` checks) -- a worker with other code would count other
states.

Checkpoints (``--checkpoint``/``--resume``) are those of ``--workers``: the search runs in rounds
(``parallel.run_rounds``); at each pause the parts of the visited set and the pool's stacks come
back to the calling process, are saved, and go out again to new actors.

``distributed`` is an optional dependency (``pip install 'mmusim[dask]'``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mmusim.explore import checkpoint  # a worker's hash: ``checkpoint.search_code_fingerprint``
from mmusim.explore.checkpoint import search_code_fingerprint  # this process's
from mmusim.explore.model import Model
from mmusim.explore.parallel import (
    RememberingClaim,
    RoundResult,
    RoundTick,
    VisitedSet,
    WorkPool,
    keep_left,
    run_rounds,
    search_worker,
    work_of,
)
from mmusim.explore.search import Key, Result, SearchState, Stats, Violation, root_result
from mmusim.scenario import Scenario

__all__ = ["DaskError", "explore_dask"]

CONNECT_TIMEOUT = 10.0  # seconds to reach the scheduler (``--dask-timeout``)
# Transitions between a search's looks at the work pool. A call to an actor on another worker costs
# about 2 ms of the two processes' time (measured: 3,500 claims, 7.8 s), so a search looks less
# often than ``--workers``' (16): race_self_abort with the fix took 13.6 s at 16, 12.4 s at 64.
CHECK_EVERY = 64
WATCH = 0.5  # seconds between looks at the cluster's workers while the searches run


class DaskError(Exception):
    """The cluster cannot run the search: unreachable, no workers, other mmusim code, or lost
    during the search. The message names ``--dask``."""


class _Resolved:
    """A Dask actor whose method calls return their answers instead of ``ActorFuture``s."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.actor, name)

        # the actors' methods are short and hold no lock long: run them on the worker's event
        # loop, not in its actor thread (a thread hop less per call: 0.9 ms a call, not 1.2)
        return lambda *args: method(*args, separate_thread=False).result()


def _near(actor: Any) -> Any:
    """The object behind ``actor`` if this worker holds it, called in place (its lock makes
    that safe beside the calls other workers send it: a function call, not a message to itself);
    otherwise the actor, its answers resolved."""
    from distributed import get_worker

    held = get_worker().state.actors.get(actor.key)  # the actors this worker holds, by key
    return held if held is not None else _Resolved(actor)


def owner_of(fp: bytes, parts: int) -> int:
    """Which of ``parts`` parts of the visited set holds the state of fingerprint ``fp``."""
    return int.from_bytes(fp[:8], "little") % parts


class _Owners:
    """The claim of a visited set split across actors: each fingerprint goes to its owner."""

    def __init__(self, parts: list[Any]) -> None:
        self.parts = [_near(p) for p in parts]

    def __call__(
        self, fp: bytes, sleep: frozenset[Key], pre: int
    ) -> tuple[bool, frozenset[Key], bool]:
        owner = self.parts[owner_of(fp, len(self.parts))]
        answer: tuple[bool, frozenset[Key], bool] = owner.claim(fp, sleep, pre)
        return answer


def _code_there() -> str:
    """The hash of the code a worker runs (sent by reference: computed there)."""
    return checkpoint.search_code_fingerprint()


def _search(scenario: Scenario, extra: tuple[str, ...], ignore: tuple[str, ...],
            bound: int | None, worker: int, start: bool, pool: Any,
            parts: list[Any]) -> tuple[int, Stats, bool]:  # fmt: skip
    """One search task, on a Dask worker (``start``: worker 0 starts at the root; a resumed
    search has its work in the pool)."""
    model = Model(scenario, extra, ignore=ignore)
    claim = RememberingClaim(_Owners(parts))
    stats, complete = search_worker(model, bound, worker, _near(pool), claim, CHECK_EVERY,
                                    start=start)  # fmt: skip
    return worker, stats, complete


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Dask logs a failed connection and a closing client at length on stderr; the error
    ``explore_dask`` raises says it in one line."""
    log = logging.getLogger("distributed")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _client(address: str, timeout: float) -> Any:
    try:
        from distributed import Client
    except ImportError:
        raise DaskError(
            "--dask: needs the optional Dask support: pip install 'mmusim[dask]'"
        ) from None
    try:
        with _quiet():
            return Client(address, timeout=timeout)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError) as e:  # Dask's parse of the address
        raise DaskError(f"--dask: {address!r} is not a scheduler address ({_first_line(e)}); "
                        "for example tcp://10.0.0.5:8786") from None  # fmt: skip
    except (OSError, TimeoutError) as e:
        raise DaskError(f"--dask: cannot reach a Dask scheduler at {address!r} within "
                        f"{timeout:g} s ({_first_line(e)})") from None  # fmt: skip


def _workers(client: Any) -> dict[str, Any]:
    """The cluster's workers, by address, as the scheduler sees them now. Not
    ``client.scheduler_info()``: it returns the client's cached identity, which a periodic update
    (``distributed.client.scheduler-info-interval``) replaces with one that lists no workers -- a
    search on a busy machine was ended after two minutes as if its workers had left."""
    info: dict[str, Any] = client.sync(client.scheduler.identity, n_workers=-1)
    return dict(info["workers"])


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _gather(client: Any, tasks: list[Any], addrs: list[str],
            tick: Callable[[], object]) -> list[tuple[int, Stats, bool]]:  # fmt: skip
    """The searches' results; a worker that leaves the cluster (its process died, its machine
    stopped) raises ``DaskError`` instead of leaving the search waiting for ever: its parts of the
    visited set and its searches are gone, and Dask will not run them elsewhere. ``tick`` is
    called about twice a second while the searches run."""
    from distributed import wait

    while True:
        pending = [t for t in tasks if not t.done()]
        if not pending or any(t.status == "error" for t in tasks):
            return list(client.gather(tasks))
        with contextlib.suppress(TimeoutError):
            wait(pending, timeout=WATCH, return_when="FIRST_COMPLETED")  # type: ignore[no-untyped-call]
        tick()
        here = _workers(client)
        gone = [a for a in addrs if a not in here]
        if gone:
            raise DaskError(f"--dask: worker {gone[0]} left the cluster during the search; "
                            "its part of the visited set is lost (run the search again)")  # fmt: skip


def explore_dask(
    scenario: Scenario | str | Path,
    extra_config: tuple[str, ...] = (),
    *,
    address: str,
    ignore: tuple[str, ...] = (),
    max_preemptions: int | None = None,
    timeout: float = CONNECT_TIMEOUT,
    state: SearchState | None = None,
    save: Callable[[SearchState], None] | None = None,
    every: float | Callable[[], float] = 60.0,
    stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[Stats], None] | None = None,
) -> Result:
    """The complete search of ``explore`` on the Dask cluster whose scheduler is at ``address``
    (e.g. ``tcp://10.0.0.5:8786``): one search per worker thread. Its result is as
    ``explore_parallel``'s, and so are ``state``, ``save``, ``every``, ``stop`` and
    ``on_progress`` (checkpoints: the searches pause, the visited set's parts and the stacks come
    back to this process for ``save``, and the next round ships them out again). Raises
    ``DaskError`` if the cluster cannot run it."""
    st = state if state is not None else SearchState()
    t0 = time.perf_counter() - st.stats.seconds
    model = Model(scenario, extra_config, ignore=ignore)
    early = root_result(model, t0, max_preemptions)
    if early is not None:
        return early
    client = _client(address, timeout)
    with _quiet(), client:
        workers = _workers(client)
        if not workers:
            raise DaskError(f"--dask: the cluster at {address!r} has no workers")
        mine = search_code_fingerprint()
        for addr, theirs in sorted(client.run(_code_there).items()):
            if theirs != mine:
                raise DaskError(f"--dask: worker {addr} runs other mmusim code than this one "
                                "(install the same version on every worker)")  # fmt: skip
        addrs = sorted(workers)
        slots = [a for a in addrs for _ in range(workers[a]["nthreads"])]
        spec = (model.scenario, tuple(extra_config), tuple(ignore), max_preemptions)

        def one_round(start: bool, pause_at: float, stop_: Callable[[], bool] | None
                      ) -> RoundResult:  # fmt: skip
            return _round(client, addrs, slots, spec, start, st, pause_at, stop_, on_progress,
                          t0, timeout)  # fmt: skip

        return run_rounds(one_round, st, max_preemptions, t0, save, every, stop)


def _round(client: Any, addrs: list[str], slots: list[str],
           spec: tuple[Scenario, tuple[str, ...], tuple[str, ...], int | None], start: bool,
           st: SearchState, pause_at: float, stop: Callable[[], bool] | None,
           on_progress: Callable[[Stats], None] | None, t0: float,
           timeout: float) -> RoundResult:  # fmt: skip
    """The searches run on the cluster from ``st`` until the search ends or, after ``pause_at``
    seconds or when ``stop()``, pauses: then ``st`` gets the visited set (its parts put together)
    and the stacks left. As ``parallel._round``, on actors: one part of the visited set per
    worker, holding the states of ``st.visited`` it owns, and the work pool."""
    shares: list[dict[bytes, tuple[frozenset[Key], int]]] = [{} for _ in addrs]
    for fp, entry in st.visited.items():
        shares[owner_of(fp, len(addrs))][fp] = entry
    # a resumed set can be large: it goes to its worker as data, not inside the task
    data = [client.scatter([share], workers=[a], hash=False)[0] if share else None
            for a, share in zip(addrs, shares, strict=True)]  # fmt: skip
    # The actors live as long as their futures: keep them until the end of the round
    part_futures = [client.submit(VisitedSet, d, actor=True, workers=[a], allow_other_workers=False,
                                  pure=False) for a, d in zip(addrs, data, strict=True)]  # fmt: skip
    pool_future = client.submit(WorkPool, len(slots), work_of(st), actor=True, workers=[addrs[0]],
                                allow_other_workers=False, pure=False)  # fmt: skip
    parts = [f.result() for f in part_futures]
    pool = pool_future.result()
    tasks = [client.submit(_search, *spec, w, start, pool, parts, workers=[a],
                           allow_other_workers=False, pure=False)
             for w, a in enumerate(slots)]  # fmt: skip
    tick = RoundTick(st, t0, pause_at, stop, on_progress,
                     pause=lambda: pool.pause().result(),
                     size=lambda: sum(p.size().result() for p in parts),
                     progress=lambda: pool.progress().result())  # fmt: skip
    try:
        results = _gather(client, tasks, addrs, tick)
    except BaseException as e:
        with contextlib.suppress(Exception):
            pool.report(None).result(timeout=timeout)  # the searches stop at their next poll
        client.cancel(tasks)
        if not isinstance(e, Exception) or isinstance(e, DaskError):  # Ctrl-C, SIGTERM, exit
            raise
        raise DaskError(f"--dask: the search failed on the cluster: "
                        f"{type(e).__name__}: {_first_line(e)}") from None  # fmt: skip
    states = tick.size()
    violation: Violation | None = pool.result().result()
    if tick.paused and violation is None:
        keep_left(st, {fp: e for p in parts for fp, e in p.copy().result().items()},
                  pool.work().result())  # fmt: skip
    client.cancel([*part_futures, pool_future, *(d for d in data if d is not None)])
    return results, violation, states, tick.paused
