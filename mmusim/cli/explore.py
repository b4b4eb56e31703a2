"""``mmusim explore`` and ``mmusim replay``: the SMP interleavings of a scenario (docs/explore.md).

``explore SCENARIO`` searches every interleaving of the scenario's CPUs on the real kernel (or, with
``--pct``, random ones), checking the kernel invariants and deadlock at every state, and reports
the violation with the fewest preemptions, then the fewest steps: as a readable trace, as code to
paste into a regression test, and with ``--trace FILE`` as a JSON file. ``replay FILE`` runs such
a file again step by step, refusing clearly when the scenario or the kernel no longer fits it.

Exit code 0: no violation; 1: a violation (or a replay that no longer ends in it); 2: bad input,
in one line (``mmusim explore: error: race.toml: no such scenario file``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mmusim.cli.common import COMMAND_HELP, Terminated, fail
from mmusim.cli.progress import add_progress_option, progress_wanted, search_progress
from mmusim.explore import Model, checkpoint, explore, minimal
from mmusim.explore.cluster import CONNECT_TIMEOUT, DaskError, explore_dask
from mmusim.explore.parallel import WorkerDied, explore_parallel
from mmusim.explore.pct import bound_text, pct, random_walk
from mmusim.explore.search import Result, SearchState, Stats, Stop, Violation, assert_message
from mmusim.explore.trace import (
    ReplayMismatch,
    code_fingerprint,
    load_trace,
    replay_steps,
    snippet,
    to_json,
)
from mmusim.kconfig import ConfigError
from mmusim.kernel import KernelAssert
from mmusim.mutants import MUTANTS, mutant_config_lines
from mmusim.render.trace import report
from mmusim.scenario import ScenarioError
from mmusim.scenario.document import display_path

MAX_WORKERS = 256
"""The most processes ``--workers`` starts (a machine with more cores is not what mmusim runs on)."""

MAX_DASK_TIMEOUT = 3600.0
"""The longest ``--dask-timeout``: an hour (Dask reads no infinite time)."""

__all__ = [
    "add_explore_commands", "check_writable", "cmd_explore", "cmd_replay", "replay_scenario",
]  # fmt: skip


def add_explore_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``explore`` and ``replay`` subcommands."""
    p = subparsers.add_parser(
        "explore",
        help=COMMAND_HELP["explore"],
        description="Exhaustive search (sleep sets + state fingerprints) over the scenario's "
        "interleavings on the real kernel, checking the kernel invariants and deadlock at every "
        "state. A violation is reported with a minimal trace: fewest preemptions, then fewest "
        "steps. --pct runs probabilistic concurrency testing instead. Exit code 0: no violation; "
        "1: violation; 2: bad input.",
    )
    p.add_argument("scenario", metavar="SCENARIO", type=Path)
    p.add_argument("--mutant", choices=sorted(MUTANTS), help="explore a deliberately broken kernel")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="LINE",
        help="an extra Kconfig line, e.g. CONFIG_SIM_CLEANUP_WAITS_FOR_SWITCH=y (repeatable)",
    )
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="INVARIANT",
        help="do not judge this invariant (the name its messages start with, e.g. self-unmap), "
        "to look past a window to its consequence (repeatable)",
    )
    p.add_argument(
        "--no-time", action="store_true", help="leave out times and rates (reproducible output)"
    )
    add_progress_option(p)
    p.add_argument("--max-preemptions", type=int, metavar="K", help="bound the preemptions")
    p.add_argument("--max-states", type=int, metavar="N", help="stop after N distinct states")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run the complete search on N processes (default 1): the same verdict, "
                   "state count and minimal trace")  # fmt: skip
    p.add_argument("--dask", metavar="ADDRESS",
                   help="run the complete search on the Dask cluster whose scheduler is at "
                   "ADDRESS (e.g. tcp://10.0.0.5:8786), one search per worker thread: the same "
                   "verdict, state count and minimal trace (needs mmusim[dask])")  # fmt: skip
    p.add_argument("--dask-timeout", type=float, default=CONNECT_TIMEOUT, metavar="SECONDS",
                   help=f"how long --dask tries to reach the scheduler (default {CONNECT_TIMEOUT:g})")  # fmt: skip
    random_modes = p.add_mutually_exclusive_group()
    random_modes.add_argument("--pct", action="store_true",
                              help="PCT random mode instead of exhaustive")  # fmt: skip
    random_modes.add_argument("--random-walk", action="store_true",
                              help="random walks instead of exhaustive: at each step one enabled "
                              "action, uniformly at random (--runs, --seed); reports the distinct "
                              "states covered")  # fmt: skip
    p.add_argument("--depth", type=int, default=2, help="PCT bug depth d (default 2)")
    p.add_argument("--runs", type=int, default=100, help="PCT or random-walk runs (default 100)")
    p.add_argument("--seed", type=int, default=0, help="PCT or random-walk seed (default 0)")
    p.add_argument("--trace", type=Path, metavar="FILE", help="save the counterexample as JSON")
    p.add_argument("--checkpoint", type=Path, metavar="FILE",
                   help="save the complete search to FILE every --checkpoint-every seconds and on "
                   "Ctrl-C, to go on later with --resume FILE")  # fmt: skip
    p.add_argument("--checkpoint-every", type=float, metavar="SECONDS",
                   help="how often --checkpoint saves (default: every 60 s, or 20 times as long "
                   "as the last save took if that is longer, so that saving a search of millions "
                   "of states takes at most about 5%% of its time)")  # fmt: skip
    p.add_argument("--resume", type=Path, metavar="FILE",
                   help="go on with the search saved in FILE by --checkpoint (the same scenario, "
                   "options and mmusim version)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_explore)
    r = subparsers.add_parser(
        "replay",
        help=COMMAND_HELP["replay"],
        description="Re-run a trace saved by `mmusim explore --trace`, checking at every step that "
        "the kernel is where the trace says; refuses if the scenario or the kernel no longer fits. "
        "Exit code 1: it ends in the trace's violation; 0: in none; 2: bad input.",
    )
    r.add_argument("trace", metavar="FILE", type=Path)
    r.add_argument(
        "--scenario",
        type=Path,
        metavar="FILE",
        help="the scenario file to replay on (default: the one the trace names); its sha256 must "
        "be the trace's",
    )
    r.set_defaults(func=cmd_replay)


def cmd_explore(args: argparse.Namespace) -> int:
    """Explore (or PCT-test) the scenario; print the result, save the trace if asked."""
    try:
        model = _model(args)
    except (ScenarioError, ConfigError, ValueError) as e:
        return fail("explore", str(e))
    show = progress_wanted(args.json, args.no_progress)
    try:
        result, found = _search(model, args, show)
    except SaveFailed as e:
        return fail("explore", str(e))
    except (DaskError, WorkerDied) as e:  # a worker lost: the last save still holds
        saver = args.saver
        again = (f"; the search saved before is in {saver.path}: {_go_on(saver.path)}"
                 if saver is not None and saver.saved else "")  # fmt: skip
        if saver is not None and saver.why == "terminated":  # SIGTERM to the whole group
            print(f"mmusim explore: terminated, with its workers{again}", file=sys.stderr)
            return 143
        return fail("explore", f"{e}{again}")
    if result.interrupted:
        st = result.stats
        why = args.saver.why
        print(f"mmusim explore: {why} after {st.states:,} states, {st.transitions:,} "
              f"transitions; the search is saved in {args.checkpoint}: "
              f"{_go_on(args.checkpoint)}", file=sys.stderr)  # fmt: skip
        return 143 if why == "terminated" else 130
    trace = to_json(model, found)
    if args.trace is not None and found.violation is not None:  # first: the report may be cut
        try:
            args.trace.write_text(json.dumps(trace, indent=1) + "\n")
        except OSError as e:
            return fail("explore", f"--trace: cannot write {str(args.trace)!r}: {e.strerror}")
    if args.json:
        print(json.dumps({**trace, "search": _stats_json(result)}))
    else:
        _print_result(model, args, result, found)
    if args.trace is not None and found.violation is not None and not args.json:
        print(f"\nreplay   mmusim replay {args.trace}")
    if found.violation is not None and not args.json:
        print("\nas code (paste into a regression test):\n")
        print(snippet(model, found.violation))
    return 1 if found.violation is not None else 0


def _model(args: argparse.Namespace) -> Model:
    """The explorer's model of the scenario, with the ``--config`` lines and the mutant's; raises
    ``ValueError`` for a missing file or a bound out of range."""
    if not args.scenario.exists():
        raise ValueError(f"{args.scenario}: no such scenario file")
    for name in ("max_preemptions", "max_states", "depth", "runs"):
        value = getattr(args, name)
        least = 1 if name in ("depth", "runs") else 0
        if value is not None and value < least:
            raise ValueError(
                f"--{name.replace('_', '-')}: {value} is out of range (at least {least})"
            )
    if args.trace is not None:
        check_writable(args.trace, "--trace")
    if not 1 <= args.workers <= MAX_WORKERS:
        raise ValueError(f"--workers: {args.workers} is out of range (1 to {MAX_WORKERS})")
    if args.workers > 1 or args.dask is not None:
        dask = args.dask is not None
        clash = next((o for o, on in (("--pct", args.pct), ("--random-walk", args.random_walk),
                                      ("--max-states", args.max_states is not None),
                                      ("--workers", dask and args.workers > 1))
                      if on), None)  # fmt: skip
        who = ("--dask: the cluster's workers run" if dask
               else f"--workers: {args.workers} workers run")  # fmt: skip
        if clash:
            raise ValueError(f"{who} the complete search, not with {clash}")
    if not 0 < args.dask_timeout <= MAX_DASK_TIMEOUT:  # NaN and inf too
        raise ValueError(f"--dask-timeout: {args.dask_timeout} is out of range "
                         f"(a number of seconds > 0, at most {MAX_DASK_TIMEOUT:g})")  # fmt: skip
    mode = "--pct" if args.pct else "--random-walk" if args.random_walk else None
    if mode and (args.checkpoint is not None or args.resume is not None):
        raise ValueError(f"{'--checkpoint' if args.checkpoint else '--resume'}: only for the "
                         f"complete search, not with {mode}")  # fmt: skip
    if args.checkpoint_every is not None and not args.checkpoint_every > 0:  # NaN too
        raise ValueError(f"--checkpoint-every: {args.checkpoint_every} is out of range "
                         "(a number of seconds > 0)")  # fmt: skip
    if args.checkpoint is not None:
        check_writable(args.checkpoint, "--checkpoint")
    if args.resume is not None and not args.resume.is_file():
        raise ValueError(f"--resume: {args.resume}: no such checkpoint file")
    extra = tuple(args.config) + (mutant_config_lines(args.mutant) if args.mutant else ())
    model = Model(args.scenario, extra, origin="--config", ignore=args.ignore)
    try:  # a kernel that cannot boot (a stack larger than RAM) has no interleavings to explore
        model.boot()
    except KernelAssert as e:
        raise ValueError(f"{display_path(args.scenario)}: the kernel does not boot: {e}") from None
    args.state, args.saver = SearchState(), None
    if args.resume is not None:
        try:
            args.state = checkpoint.load(args.resume, model, _bounds(args))
        except checkpoint.CheckpointError as e:
            raise ValueError(f"--resume: {e}") from None
    # PCT draws depth-1 change points, one per step at most: a run ends by max_steps
    if args.pct and args.depth > model.max_steps + 1:
        raise ValueError(f"--depth: {args.depth} is out of range (at most {model.max_steps + 1:,}: "
                         f"the scenario's runs end after max_steps = {model.max_steps:,} steps)")  # fmt: skip
    return model


def check_writable(path: Path, option: str) -> None:
    """Refuse, before any search, an output file that could not be written (``ValueError``)."""
    parent = path.parent
    if path.is_dir():
        raise ValueError(f"{option}: {path} is a directory (give a file name)")
    if not parent.is_dir():
        raise ValueError(f"{option}: {path}: no such directory {str(parent)!r}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"{option}: {path}: not writable")


def _search(model: Model, args: argparse.Namespace, show: bool) -> tuple[Result, Result]:
    """Run PCT or the complete search; returns (the search's result, the one to report). After a
    complete search finds a violation, the reported one is the minimal violation. ``show``: draw
    a progress line for each phase (``mmusim.cli.progress``)."""
    if args.random_walk:
        with search_progress(show, "random walk", total=args.runs) as update:
            result = random_walk(model, runs=args.runs, seed=args.seed, on_progress=update)
        return result, result
    if args.pct:
        with search_progress(show, "pct", total=args.runs) as update:
            result = pct(model, depth=args.depth, runs=args.runs, seed=args.seed,
                         on_progress=update)  # fmt: skip
        return result, result
    bounds = _bounds(args)
    saver = args.saver = _Saver(args, model, bounds) if args.checkpoint is not None else None
    save = None if saver is None else saver.save
    if args.dask is not None or args.workers > 1:  # a shared search: --dask or --workers
        shared: Callable[..., Result] = (
            functools.partial(explore_dask, address=args.dask, timeout=args.dask_timeout)
            if args.dask is not None else functools.partial(explore_parallel, workers=args.workers)
        )  # fmt: skip
        # the progress line: the workers' counters as they last polled the work pool
        with search_progress(show, "explore") as update, _signals_stop(saver):
            result = shared(model.scenario, model.extra_config, ignore=model.ignore,
                            max_preemptions=args.max_preemptions, state=args.state, save=save,
                            every=60.0 if saver is None else saver.interval,
                            stop=lambda: saver is not None and saver.stop, on_progress=update)  # fmt: skip
    else:
        with search_progress(show, "explore") as update, _signals_stop(saver):
            result = explore(model, max_preemptions=args.max_preemptions,
                             max_states=args.max_states, on_progress=update, state=args.state,
                             checkpoint=saver)  # fmt: skip
    if result.violation is None:
        return result, result
    with search_progress(show, "minimal trace") as update:
        found = minimal(model, **bounds, on_progress=update)
    if found.violation is None:  # bounded by max_states: keep the one we have
        return result, result
    return result, found


def _bounds(args: argparse.Namespace) -> dict[str, int | None]:
    return {"max_preemptions": args.max_preemptions, "max_states": args.max_states}


class _Saver:
    """``explore``'s checkpoint hook for ``--checkpoint FILE``: saves the search every
    ``--checkpoint-every`` seconds of wall-clock time (when it saves does not change what it
    finds), and after Ctrl-C saves it and stops it (``Stop``)."""

    def __init__(self, args: argparse.Namespace, model: Model, bounds: dict[str, int | None]):
        self.path: Path = args.checkpoint
        self.every: float | None = args.checkpoint_every  # None: automatic (interval)
        self.took = 0.0  # seconds the last save took
        self.model, self.bounds = model, bounds
        self.last = time.monotonic()
        self.stop = False
        self.why = "interrupted"  # or "terminated": what stopped it (SIGINT, SIGTERM)
        self.saved = 0  # saves so far

    def interval(self) -> float:
        """Seconds between saves: ``--checkpoint-every``, or by default 60, or 20 times as long
        as the last save took if that is longer (a save of a million states takes seconds)."""
        return self.every if self.every is not None else checkpoint_interval(self.took)

    def __call__(self, state: SearchState) -> None:
        if self.stop or time.monotonic() - self.last >= self.interval():
            self.save(state)
        if self.stop:
            raise Stop

    def save(self, state: SearchState) -> None:
        """Save now (``--workers`` pause their search every ``--checkpoint-every`` seconds and
        call this). A save that fails (a full disk) stops the search with ``SaveFailed``: a long
        search that goes on unsaved would be lost with the machine, unknown to its user."""
        start = time.monotonic()
        try:
            checkpoint.save(self.path, self.model, state, self.bounds)
        except OSError as e:
            kept = (f"; the search saved there {_ago(time.monotonic() - self.last)} is whole: "
                    f"{_go_on(self.path)}" if self.saved else "")  # fmt: skip
            raise SaveFailed(f"--checkpoint: cannot save the search to {str(self.path)!r}: "
                             f"{e.strerror or e}{kept}") from None  # fmt: skip
        self.last = time.monotonic()
        self.took = self.last - start
        self.saved += 1


def checkpoint_interval(took: float) -> float:
    """The default seconds between saves when the last one took ``took`` seconds."""
    return max(60.0, 20 * took)


class SaveFailed(Exception):
    """A ``--checkpoint`` save failed; the message is one line and names the option."""


def _go_on(path: Path) -> str:
    """How to go on with a search saved in ``path``: every message that names a checkpoint ends
    so."""
    return f"go on with the same command and --resume {path}"


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


@contextlib.contextmanager
def _signals_stop(saver: _Saver | None) -> Iterator[None]:
    """With ``--checkpoint``, Ctrl-C and SIGTERM (a machine shutting down, a batch system's time
    limit) ask the search to save and stop at its next consistent point instead of raising
    ``KeyboardInterrupt`` wherever it is, or dying. Without, SIGTERM stops it as Ctrl-C does:
    the workers of ``--workers`` are stopped, one line, ``terminated``, exit code 143."""

    def on_signal(signum: int, frame: object) -> None:
        if saver is None:
            raise Terminated
        saver.stop = True
        saver.why = "terminated" if signum == signal.SIGTERM else "interrupted"

    taken = (signal.SIGINT, signal.SIGTERM) if saver is not None else (signal.SIGTERM,)
    old = {sig: signal.signal(sig, on_signal) for sig in taken}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _print_result(model: Model, args: argparse.Namespace, result: Result, found: Result) -> None:
    """The text report: the trace of ``found``, then how the search went."""
    random_run = args.pct or args.random_walk  # the trace of one run, not a minimal one
    sys.stdout.write(report(model, found, show_time=not args.no_time, minimal=not random_run))
    if found is not result:
        st = result.stats
        secs = "" if args.no_time else f", {st.seconds:.2f} s"
        print(f"complete search: first violation after {st.states:,} states, "
              f"{st.transitions:,} transitions{secs}")  # fmt: skip
    if args.pct:
        k = result.stats.max_depth
        print(f"pct: depth {args.depth}, {result.stats.executions} runs, seed {args.seed}; "
              f"per-run bound 1/(n*k^(d-1)) = {bound_text(model.ncpus, max(k, 1), args.depth)} "
              f"with n={model.ncpus} CPUs, k={k} steps (measured)")  # fmt: skip
    if random_run:
        what = (
            "pct:"
            if args.pct
            else f"random walk: {result.stats.executions} runs, seed {args.seed};"
        )
        print(f"{what} {result.stats.states:,} distinct states covered")


def _stats_json(r: Result) -> dict[str, Any]:
    """The search statistics of ``explore --json`` (under ``"search"``)."""
    st = r.stats
    return {"verdict": r.verdict, "states": st.states, "transitions": st.transitions,
            "executions": st.executions, "max_depth": st.max_depth,
            "seconds": round(st.seconds, 3), "complete": r.complete}  # fmt: skip


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay a saved trace, checking each step; print the trace again as explore did. Exit code
    1: the replayed run ends in the trace's violation; 0: it ends in none (the kernel changed);
    2: bad input (a trace that is not one, no scenario, a changed scenario, a step that no longer
    fits)."""
    try:
        data, steps = load_trace(args.trace)
        scenario = replay_scenario(args.trace, data, args.scenario)
        model = Model(scenario, data.get("config", []), origin=f"{args.trace}: config",
                      ignore=data.get("ignore", []))  # fmt: skip
    except (OSError, ValueError, ScenarioError, ConfigError) as e:
        return fail("replay", str(e))
    if data.get("model") != code_fingerprint():
        print("note: the kernel's code changed since this trace was recorded; "
              "replaying by step labels")  # fmt: skip
    saved = data.get("violation") or {}
    no_longer = f"mmusim replay: {args.trace}: the trace no longer ends in its violation"
    try:
        k = replay_steps(model, steps)
    except ReplayMismatch as e:
        return fail("replay", f"{args.trace}: {e}")
    except KernelAssert as e:
        if saved.get("kind") != "kernel assert":
            print(f"{no_longer}: {assert_message(e)}")
            return 1  # a violation all the same
        problems = [assert_message(e)]
    else:
        problems = model.violations(k)
        kind = saved.get("kind")
        if kind == "kernel assert":
            print(f"{no_longer} (the kernel no longer asserts)")
            return 0
        if kind == "step bound" and k.steps < model.max_steps:
            print(f"{no_longer} (it stops before the step bound, {model.max_steps:,} steps)")
            return 0
        if not saved or (kind == "invariant" and not problems):
            print(f"{no_longer} (the kernel changed)" if saved else
                  f"mmusim replay: {args.trace}: no violation recorded, none found")  # fmt: skip
            return 0
    v = Violation(saved.get("kind", "invariant"), tuple(problems or saved.get("messages", [])),
                  tuple((s.cpu, s.kind) for s in steps), tuple(steps),
                  int(saved.get("preemptions", 0)))  # fmt: skip
    print(f"replaying {len(steps)} steps of {args.trace}")
    sys.stdout.write(report(model, Result(v, Stats(), False, None), show_search=False))
    return 1


def replay_scenario(trace: Path, data: dict[str, Any], scenario: Path | None) -> Path:
    """The scenario file to replay trace ``trace`` (its ``data``) on: ``scenario`` (the
    ``--scenario`` option), else the trace's (absolute since traces store
    it so; an older relative one is looked up from the current directory, then from the trace's
    directory). Its sha256 must be the trace's. Raises ``ValueError`` with a one-line message."""
    if scenario is not None:
        path: Path = scenario
        if not path.is_file():
            raise ValueError(f"--scenario: {path}: no such scenario file")
    else:
        stored = Path(data["scenario"])
        tries = [stored] if stored.is_absolute() else [stored, trace.parent / stored]
        found = next((p for p in tries if p.is_file()), None)
        if found is None:
            raise ValueError(f"{trace}: scenario: {stored}: no such scenario file "
                             "(give it with --scenario FILE)")  # fmt: skip
        path = found
    want = data.get("scenario_sha256")
    if want is not None and _sha256(path) != want:
        raise ValueError(f"{trace}: scenario: {path} is not the file the trace was recorded "
                         "on (its sha256 differs): the scenario changed")  # fmt: skip
    return path


def _sha256(path: Path) -> str:
    """The file's sha256, read in pieces (a huge file given as --scenario is not held whole)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
