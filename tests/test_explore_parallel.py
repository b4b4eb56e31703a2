"""``explore --workers N``: the complete search on several processes (issue 15).

Sleep sets prune transitions, never states, so a search that ends without a violation visits every
reachable state in any order: with two workers sharing one visited set, the same count. A search
that meets a violation stops at an order-dependent point; its verdict is the same, and the trace
``mmusim explore`` reports is the minimal one, searched in one process: the same text. Within a
preemption bound (``race_reuse`` here) the count depends on the order as well: a state is cut off
by the bound on the path that reached it first.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmusim.cli import main
from mmusim.explore import Model, checkpoint, explore
from mmusim.explore.parallel import explore_parallel
from mmusim.explore.search import SearchState, Stop
from mmusim.scenario import BUNDLED_DIR
from test_explore_checkpoint import _default_sigint, ctrl_c_then_resume
from test_explore_golden import GOLDEN, cases

RACES = BUNDLED_DIR / "explore"


# user-priv-stack changes nothing a race scenario runs (no K_USER thread): its searches are the
# fix's, state for state (the golden file shows it), so two workers need not run them again.
PARALLEL_CASES = [c for c in cases() if not c[0].endswith("/user-priv-stack")]


@pytest.mark.parametrize(("name", "extra", "bound"), PARALLEL_CASES,
                         ids=[c[0] for c in PARALLEL_CASES])  # fmt: skip
def test_two_workers_give_the_verdict_and_the_states_of_one(
    name: str, extra: tuple[str, ...], bound: int | None
) -> None:
    verdict, states, _, complete, violation = json.loads(GOLDEN.read_text())["cases"][name]
    r = explore_parallel(RACES / f"{name.split('/')[0]}.toml", extra, workers=2,
                         max_preemptions=bound)  # fmt: skip
    assert r.verdict == verdict
    assert r.complete == complete
    if violation is None:
        if bound is None:  # (within a bound the count depends on the order: see above)
            assert r.stats.states == states  # every reachable state, once
    else:
        assert r.violation is not None and r.violation.kind == violation[0]
        assert r.violation.messages[0].split(":")[0] == violation[1][0].split(":")[0]


def report_without_search_counts(text: str) -> str:
    return "\n".join(line for line in text.splitlines()
                     if not line.startswith("complete search: first violation after"))  # fmt: skip


def test_the_report_with_two_workers_is_the_report_with_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    race = str(RACES / "race_self_abort.toml")
    outs = []
    for w in ("1", "2"):
        trace = tmp_path / f"t{w}.json"
        assert main(["explore", "--no-time", race, "--workers", w, "--trace", str(trace)]) == 1
        outs.append(report_without_search_counts(capsys.readouterr().out))
        steps = json.loads(trace.read_text())["steps"]
        assert steps
    assert outs[0].replace("t1.json", "T") == outs[1].replace("t2.json", "T")
    assert "minimal  2 preemptions, 39 steps" in outs[1]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "0"], "--workers: 0 is out of range (1 to 256)"),
        (["--workers", "-3"], "--workers: -3 is out of range (1 to 256)"),
        (["--workers", "10" * 20], "is out of range (1 to 256)"),
        (
            ["--workers", "2", "--pct"],
            "--workers: 2 workers run the complete search, not with --pct",
        ),
        (["--workers", "2", "--random-walk"], "not with --random-walk"),
        (["--workers", "2", "--max-states", "9"], "not with --max-states"),
    ],
)
def test_workers_out_of_range(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = [a.replace("TMP", str(tmp_path)) for a in extra]
    assert main(["explore", str(RACES / "race_self_abort.toml"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mmusim explore: error: --workers: ")
    assert message in err


@pytest.mark.parametrize(("name", "cpus", "threads"), [("race_self_abort_3cpu", 3, 2),
                                                       ("race_self_abort_3x3", 3, 3),
                                                       ("race_reuse_twice", 2, None)])  # fmt: skip
def test_the_bigger_races_have_every_cpu_take_part(
    name: str, cpus: int, threads: int | None
) -> None:
    # Their complete searches are long (docs/explore.md); CI searches their first 1,500 states with
    # the fix, and checks on seeded random runs that every CPU takes steps and, where each thread
    # aborts itself, that each did.
    path = RACES / f"{name}.toml"
    model = Model(path, ("CONFIG_SIM_CLEANUP_WAITS_FOR_SWITCH=y",))
    assert model.ncpus == cpus
    r = explore(model, max_states=1500)
    assert r.verdict == "pass (bounded)" and r.stats.states == 1500
    for seed in range(3):
        rng = random.Random(seed)
        k = model.reset()
        seen = set()
        while acts := model.actions(k):
            a = rng.choice(acts)
            seen.add(a[0])
            model.step(k, a)
        assert seen >= set(range(cpus))
        assert not model.violations(k) and not model.end_violations(k)
        if threads is not None:
            exited = [t for t in k.threads.values()
                      if t.exit_reason == "returned" and t.name != "main"]  # fmt: skip
            assert len(exited) == threads


def test_a_worker_that_dies_ends_the_search_with_an_error(monkeypatch: pytest.MonkeyPatch) -> None:

    import mmusim.explore.parallel as parallel

    def dies(*args: object) -> None:
        os._exit(3)

    monkeypatch.setattr(parallel, "_worker", dies)  # the workers are forked: they see it
    with pytest.raises(RuntimeError, match=r"worker \d died \(exit code 3\)"):
        explore_parallel(RACES / "race_abort_blocked.toml", workers=2)


# -- checkpoints of a search shared by workers (--workers N --checkpoint FILE) -------------------

FIX = "CONFIG_SIM_CLEANUP_WAITS_FOR_SWITCH=y"
NO_BOUNDS: dict[str, int | None] = {"max_preemptions": None, "max_states": None}


def test_workers_paused_for_checkpoints_again_and_again_visit_every_state() -> None:
    """Every pause stops the workers, takes back their stacks and the visited set, and starts new
    workers on them: many pauses must lose no state (and add none)."""
    golden = json.loads(GOLDEN.read_text())["cases"]["race_self_abort/fix"]
    saved: list[tuple[int, int]] = []

    def save(st: SearchState) -> None:
        assert len(st.visited) == st.stats.states and (st.stack or st.more)
        saved.append((st.stats.states, len(st.more) + 1))

    r = explore_parallel(RACES / "race_self_abort.toml", (FIX,), workers=2, save=save, every=0.3)
    assert (r.verdict, r.stats.states, r.complete) == ("pass", golden[1], True)
    assert len(saved) >= 3, saved  # about 6 s of search
    assert [s for s, _ in saved] == sorted(s for s, _ in saved)


def test_a_checkpoint_of_workers_resumes_with_workers_or_in_one_process(tmp_path: Path) -> None:
    golden = json.loads(GOLDEN.read_text())["cases"]["race_self_abort/fix"]
    path = tmp_path / "w.ckpt"
    model = Model(RACES / "race_self_abort.toml", (FIX,))
    saves = [0]

    def save(st: SearchState) -> None:
        checkpoint.save(path, model, st, NO_BOUNDS)
        saves[0] += 1

    r = explore_parallel(RACES / "race_self_abort.toml", (FIX,), workers=2, save=save, every=0.5,
                         stop=lambda: saves[0] >= 2)  # fmt: skip
    assert r.interrupted and r.verdict == "interrupted" and not r.complete
    assert 0 < r.stats.states < golden[1]
    again = explore_parallel(RACES / "race_self_abort.toml", (FIX,), workers=2,
                             state=checkpoint.load(path, model, NO_BOUNDS))  # fmt: skip
    alone = explore(model, state=checkpoint.load(path, model, NO_BOUNDS))
    for done in (again, alone):
        assert (done.verdict, done.stats.states, done.complete) == ("pass", golden[1], True)
        assert done.stats.transitions > r.stats.transitions


def save_one_process_search(model: Model, path: Path, after: int = 2000) -> None:
    """Search ``model`` in one process, save it to ``path`` after ``after`` transitions, stop."""
    calls = [0]

    def hook(st: SearchState) -> None:
        calls[0] += 1
        if calls[0] == after:
            checkpoint.save(path, model, st, NO_BOUNDS)
            raise Stop

    assert explore(model, checkpoint=hook).interrupted


def test_a_one_process_checkpoint_resumes_with_workers(tmp_path: Path) -> None:
    golden = json.loads(GOLDEN.read_text())["cases"]["race_self_abort/fix"]
    path = tmp_path / "c.ckpt"
    model = Model(RACES / "race_self_abort.toml", (FIX,))
    save_one_process_search(model, path)
    done = explore_parallel(RACES / "race_self_abort.toml", (FIX,), workers=2,
                            state=checkpoint.load(path, model, NO_BOUNDS))  # fmt: skip
    assert (done.verdict, done.stats.states, done.complete) == ("pass", golden[1], True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_saves_a_search_of_workers_and_resume_finishes_it(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # A real process, a real SIGINT: the workers pause, the search is saved, exit code 130; the
    # same command with --resume finishes with every state. SIGTERM to the caller (`kill PID`):
    # the same, exit code 143.
    golden = json.loads(GOLDEN.read_text())["cases"]["race_self_abort/fix"]
    path = tmp_path / "w.ckpt"
    argv = [sys.executable, "-m", "mmusim", "explore", "--no-time", "--no-progress",
            str(RACES / "race_self_abort.toml"), "--config", FIX, "--workers", "2",
            "--checkpoint", str(path), "--checkpoint-every", "0.5"]  # fmt: skip
    done = ctrl_c_then_resume(argv, path, sig)
    assert done.returncode == 0, done.stderr
    assert f"search   {golden[1]:,} states" in done.stdout
    assert "verdict  complete" in done.stdout


def test_a_worker_killed_by_the_system_is_one_line() -> None:
    # The out-of-memory killer takes a worker (SIGKILL): one line, exit code 2. It was a
    # traceback ending in RuntimeError.
    argv = [sys.executable, "-m", "mmusim", "explore", "--no-progress",
            str(RACES / "race_ipi_abort.toml"), "--config", FIX, "--workers", "2"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # the workers are searching (the search takes about 9 s)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    os.kill(int(children.stdout.split()[-1]), signal.SIGKILL)  # the last one started: a worker
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert err.startswith("mmusim explore: error: explore_parallel: ") and err.count("\n") == 1
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("checkpointed", [False, True])
def test_sigterm_to_the_process_group_stops_caller_and_workers_in_one_line(
    tmp_path: Path, checkpointed: bool
) -> None:
    # A machine shutting down sends SIGTERM to every process: the workers and the manager die at
    # once, so this round cannot be saved. One line, exit code 143, and the search saved before
    # (if any) named for --resume. It was a traceback (the manager gone) or, without
    # --checkpoint, the workers' own tracebacks (they had inherited the caller's handler).
    path = tmp_path / "w.ckpt"
    argv = [sys.executable, "-m", "mmusim", "explore", "--no-progress",
            str(RACES / "race_ipi_abort.toml"), "--config", FIX, "--workers", "2"]  # fmt: skip
    if checkpointed:
        argv += ["--checkpoint", str(path), "--checkpoint-every", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while checkpointed and not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # the workers are searching (the search takes about 9 s)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    if not checkpointed:
        assert err == "mmusim explore: terminated\n" and out == ""
        return
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("mmusim explore: terminated"), err
    if "after" not in err:  # the group's signal came in the middle of a round
        assert err == (f"mmusim explore: terminated, with its workers; the search saved before is "
                       f"in {path}: go on with the same command and --resume {path}\n")  # fmt: skip
    model = Model(RACES / "race_ipi_abort.toml", (FIX,))
    assert checkpoint.load(path, model, NO_BOUNDS).stats.states > 0


def test_ctrl_c_without_a_checkpoint_stops_the_workers_in_one_line() -> None:
    # A terminal's Ctrl-C goes to the whole process group: the caller, its workers and manager.
    # The workers ignore it; the caller stops them before their manager, so none of them dies
    # with a message of its own.
    argv = [sys.executable, "-m", "mmusim", "explore", "--no-progress",
            str(RACES / "race_ipi_abort.toml"), "--config", FIX, "--workers", "2"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_default_sigint)  # fmt: skip
    time.sleep(3)  # the workers are searching (the search takes about 9 s)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err == "mmusim explore: interrupted\n" and out == ""
