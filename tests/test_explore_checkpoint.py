"""Checkpoints of the complete search: stopped anywhere, resumed, the same result (issue 15)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mmusim.cli import main
from mmusim.explore import Model, checkpoint, explore
from mmusim.explore.search import SearchState, Stop
from mmusim.scenario import BUNDLED_DIR

RACES = BUNDLED_DIR / "explore"
FIX = "CONFIG_SIM_CLEANUP_WAITS_FOR_SWITCH=y"
NO_BOUNDS: dict[str, int | None] = {"max_preemptions": None, "max_states": None}


def summary(r: Any) -> tuple[Any, ...]:
    v = r.violation
    return (r.verdict, r.stats.states, r.stats.transitions, r.stats.max_depth, r.complete,
            None if v is None else (v.kind, v.messages, v.schedule, v.steps, v.preemptions))  # fmt: skip


def stopping_at(*counts: int, path: Path, model: Model) -> Any:
    """A checkpoint hook that saves and stops at its ``counts``-th calls."""
    calls = [0]

    def hook(state: SearchState) -> None:
        calls[0] += 1
        if calls[0] in counts:
            checkpoint.save(path, model, state, NO_BOUNDS)
            raise Stop

    return hook


@pytest.mark.parametrize(
    ("scenario", "extra", "stops"),
    [
        ("race_abort_blocked", (FIX,), (1, 200, 700)),  # a pass: 1,141 states
        ("race_self_abort", (), (50, 900)),  # a violation after 2,268 states
    ],
)
def test_a_search_stopped_and_resumed_from_its_file_finds_what_one_run_finds(
    scenario: str, extra: tuple[str, ...], stops: tuple[int, ...], tmp_path: Path
) -> None:
    whole = explore(Model(RACES / f"{scenario}.toml", extra))
    path = tmp_path / "c.json"
    state = SearchState()
    rounds = 0
    while True:
        model = Model(RACES / f"{scenario}.toml", extra)  # a new process, as it were
        hook = stopping_at(*stops[:1], path=path, model=model)  # the rest: go to the end
        r = explore(model, state=state, checkpoint=hook)
        if not r.interrupted:
            break
        rounds += 1
        assert r.verdict == "interrupted" and not r.complete
        state = checkpoint.load(path, model, NO_BOUNDS)  # from the file, not the object
        stops = stops[1:]
    assert rounds >= 1
    assert summary(r) == summary(whole)


def test_a_checkpoint_reads_back_as_it_was_written(tmp_path: Path) -> None:
    model = Model(RACES / "race_self_abort.toml")
    path = tmp_path / "c.json"
    r = explore(model, checkpoint=stopping_at(300, path=path, model=model))
    assert r.interrupted
    state = checkpoint.load(path, model, NO_BOUNDS)
    again = tmp_path / "d.json"
    checkpoint.save(again, model, state, NO_BOUNDS)
    assert json.loads(again.read_text()) == json.loads(path.read_text())
    assert state.stats.states == r.stats.states and len(state.visited) == r.stats.states
    assert not list(tmp_path.glob("*.tmp"))  # written to a temporary name, then renamed


def ctrl_c_then_resume(
    argv: list[str], path: Path, sig: signal.Signals = signal.SIGINT
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (which saves to ``path``), press Ctrl-C (or send ``sig``: SIGTERM, as a
    machine shutting down does) once ``path`` exists, check the one line and exit code 130 (143),
    then run ``argv --resume path`` and return how it went."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=_default_sigint)  # fmt: skip
    deadline = time.monotonic() + 60
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.fail("the search ended before Ctrl-C: make the scenario bigger")
    term = sig == signal.SIGTERM
    assert proc.returncode == (143 if term else 130), err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"mmusim explore: {'terminated' if term else 'interrupted'} after ")
    assert f"the search is saved in {path}: go on with the same command and --resume" in err
    return subprocess.run([*argv, "--resume", str(path)], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the test may run where SIGINT is ignored


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_saves_the_search_and_resume_finishes_it(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # A real process, a real SIGINT: --checkpoint saves and stops at the next consistent point,
    # exit code 130; the same command with --resume finishes with the uninterrupted counts. A
    # SIGTERM (a machine shutting down) the same, exit code 143: it killed the search unsaved.
    path = tmp_path / "race.ckpt"
    scenario = str(RACES / "race_abort_blocked.toml")
    argv = [sys.executable, "-m", "mmusim", "explore", "--no-time", "--no-progress", scenario,
            "--config", FIX, "--checkpoint", str(path), "--checkpoint-every", "0.05"]  # fmt: skip
    done = ctrl_c_then_resume(argv, path, sig)
    assert done.returncode == 0, done.stderr
    whole = explore(Model(scenario, (FIX,)))
    assert (
        f"search   {whole.stats.states:,} states, {whole.stats.transitions:,} transitions"
        in done.stdout
    )
    assert "verdict  complete" in done.stdout


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    model = Model(RACES / "race_self_abort.toml")
    path = tmp_path / "c.json"
    explore(model, checkpoint=stopping_at(100, path=path, model=model))
    return path


def run_resume(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_resume_refuses_a_checkpoint_of_another_search(
    saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    race = str(RACES / "race_self_abort.toml")
    err = run_resume(
        ["explore", str(RACES / "race_ipi_abort.toml"), "--resume", str(saved)], capsys
    )
    assert "--resume: " in err and "a checkpoint of another scenario file" in err
    err = run_resume(["explore", race, "--config", FIX, "--resume", str(saved)], capsys)
    assert "a checkpoint of other --config or --mutant lines" in err
    err = run_resume(["explore", race, "--max-preemptions", "2", "--resume", str(saved)], capsys)
    assert "a checkpoint of other bounds" in err
    data = json.loads(saved.read_text())
    data["code"] = "0" * 16
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    err = run_resume(["explore", race, "--resume", str(other)], capsys)
    assert "a checkpoint of another version of mmusim's kernel or explorer code" in err


def test_the_default_interval_between_saves_grows_with_the_save(tmp_path: Path) -> None:
    """By default a search saves every 60 s, or 20 times as long as its last save took (a save
    of a million states takes seconds); ``--checkpoint-every`` is taken as given."""
    import argparse

    from mmusim.cli.explore import _Saver, checkpoint_interval

    assert checkpoint_interval(0.2) == 60.0 and checkpoint_interval(5.2) == pytest.approx(104.0)
    model = Model(RACES / "race_self_abort.toml")
    auto = _Saver(argparse.Namespace(checkpoint=tmp_path / "a.json", checkpoint_every=None),
                  model, NO_BOUNDS)  # fmt: skip
    assert auto.interval() == 60.0
    auto.save(SearchState())
    assert auto.took > 0 and auto.interval() == checkpoint_interval(auto.took)
    auto.took = 10.0
    assert auto.interval() == 200.0
    given = _Saver(argparse.Namespace(checkpoint=tmp_path / "g.json", checkpoint_every=5.0),
                   model, NO_BOUNDS)  # fmt: skip
    given.took = 10.0
    assert given.interval() == 5.0


def test_resume_takes_a_checkpoint_whose_scenario_moved(saved: Path, tmp_path: Path) -> None:
    """A search saved on a laptop goes on from another checkout or machine, where the scenario
    is the same file at another path: the sha256 decides, not the path."""
    moved = tmp_path / "elsewhere" / "race_self_abort.toml"
    moved.parent.mkdir()
    moved.write_bytes((RACES / "race_self_abort.toml").read_bytes())
    state = checkpoint.load(saved, Model(moved), NO_BOUNDS)
    assert (
        state.stats
        == checkpoint.load(saved, Model(RACES / "race_self_abort.toml"), NO_BOUNDS).stats
    )
    moved.write_text(moved.read_text() + "\n# edited\n")
    with pytest.raises(checkpoint.CheckpointError, match="a checkpoint of another scenario file"):
        checkpoint.load(saved, Model(moved), NO_BOUNDS)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{}", "not a checkpoint of mmusim explore ('mmusim-checkpoint/1' expected)"),
        ("{ no", "not a checkpoint: not JSON"),
        ("\x00", "not a checkpoint"),
        ("DAMAGED", "a damaged checkpoint: "),
    ],
)
def test_resume_refuses_what_is_not_a_checkpoint(
    content: str, message: str, saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    if content == "DAMAGED":
        data = json.loads(saved.read_text())
        del data["stack"][0]["options"]
        bad.write_text(json.dumps(data))
    else:
        bad.write_text(content)
    err = run_resume(["explore", str(RACES / "race_self_abort.toml"), "--resume", str(bad)], capsys)
    assert f"mmusim explore: error: --resume: {bad}: {message}" in err


def test_a_checkpoint_larger_than_the_cap_is_read_and_another_file_is_not(
    saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search of more than ten million states saves more than ``MAX_CHECKPOINT_BYTES`` (about
    100 bytes a state): ``load`` must read it whole (it refused it, so the longest searches could
    not be resumed). A file of that size that does not begin as a checkpoint is still refused
    unread. The cap is lowered here to the size of a small checkpoint."""
    size = saved.stat().st_size
    assert saved.read_bytes().startswith(checkpoint.HEAD)
    monkeypatch.setattr(checkpoint, "MAX_CHECKPOINT_BYTES", size // 2)
    model = Model(RACES / "race_self_abort.toml")
    state = checkpoint.load(saved, model, NO_BOUNDS)
    assert state.stats.states > 0 and state.stack
    other = tmp_path / "other.json"
    other.write_bytes(b" " + saved.read_bytes())  # the same JSON, not as save() begins it
    with pytest.raises(
        checkpoint.CheckpointError,
        match=f"other.json: cannot read: larger than {size // 2:,} bytes",
    ):
        checkpoint.load(other, model, NO_BOUNDS)
    monkeypatch.setattr(checkpoint, "MAX_CHECKPOINT_BYTES", size * 2)
    assert checkpoint.load(other, model, NO_BOUNDS).stats == state.stats  # under the cap: read


def test_equal_visited_entries_are_one_object_in_a_search_and_in_a_checkpoint(
    tmp_path: Path,
) -> None:
    """A search of millions of states has a few thousand distinct (sleep set, preemptions)
    entries: each is kept once (about 100 bytes a state instead of 440), by the search and by
    ``load``. The entries stay equal to what they were."""
    model = Model(RACES / "race_self_abort.toml", [FIX])
    st = SearchState()
    explore(model, state=st, checkpoint=stopping_at(3000, path=tmp_path / "c.json", model=model))
    for visited in (st.visited, checkpoint.load(tmp_path / "c.json", model, NO_BOUNDS).visited):
        assert len(visited) > 900
        assert len({id(e) for e in visited.values()}) == len(set(visited.values())) < 100
    assert checkpoint.load(tmp_path / "c.json", model, NO_BOUNDS).visited == st.visited


def test_a_save_that_fails_stops_the_search_in_one_line_and_keeps_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full disk at the second save: one line naming --checkpoint, the reason and the whole
    checkpoint to resume from, exit 2; that checkpoint resumes, and no half-written file is left
    beside it. (It was a traceback, and a ``.tmp`` file.)"""
    real = Path.write_text
    writes = [0]

    def full_disk(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        writes[0] += 1
        if writes[0] == 1:
            return real(self, data, *args, **kwargs)
        real(self, data[:100])  # the disk fills up part way
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full_disk)
    path = tmp_path / "c.json"
    race = str(RACES / "race_self_abort.toml")
    argv = ["explore", race, "--config", FIX, "--no-progress", "--checkpoint", str(path),
            "--checkpoint-every", "0.05"]  # fmt: skip
    err = run_resume(argv, capsys)
    assert err.startswith(f"mmusim explore: error: --checkpoint: cannot save the search to "
                          f"'{path}': No space left on device; the search saved there ")  # fmt: skip
    assert err.endswith(f"is whole: go on with the same command and --resume {path}\n")
    assert writes[0] == 2 and not path.with_name("c.json.tmp").exists()
    model = Model(RACES / "race_self_abort.toml", [FIX])
    assert checkpoint.load(path, model, NO_BOUNDS).stats.states > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--pct", "--checkpoint", "X"],
            "--checkpoint: only for the complete search, not with --pct",
        ),
        (["--pct", "--resume", "X"], "--resume: only for the complete search, not with --pct"),
        (["--checkpoint-every", "0"], "--checkpoint-every: 0.0 is out of range"),
        (["--checkpoint-every", "nan"], "--checkpoint-every: nan is out of range"),
        (["--resume", "TMP/none.json"], "--resume: TMP/none.json: no such checkpoint file"),
        (["--checkpoint", "TMP"], "--checkpoint: TMP is a directory"),
    ],
)
def test_checkpoint_options_out_of_range(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = [a.replace("TMP", str(tmp_path)).replace("X", str(tmp_path / "x.json")) for a in extra]
    err = run_resume(["explore", str(RACES / "race_self_abort.toml"), *extra], capsys)
    assert message.replace("TMP", str(tmp_path)) in err


# -- the random walk --------------------------------------------------------------------------


def test_random_walk_finds_the_self_unmap_and_its_trace_replays() -> None:
    from mmusim.explore.pct import random_walk
    from mmusim.explore.trace import replay_steps

    model = Model(RACES / "race_self_abort.toml")
    r = random_walk(model, runs=300, seed=0)
    assert r.violation is not None and r.violation.kind == "invariant"
    assert r.violation.messages[0].startswith("self-unmap: CPU ")
    again = random_walk(Model(RACES / "race_self_abort.toml"), runs=300, seed=0)
    assert summary(again) == summary(r)  # the same seed, the same runs
    k = replay_steps(model, r.violation.steps)
    assert any(m.startswith("self-unmap") for m in model.violations(k))


def test_random_walk_covers_only_states_the_complete_search_visits() -> None:
    # Sleep sets prune transitions, not states: the complete search visits every reachable
    # state, so what random runs (walks or PCT) cover is a part of it, counted the same way.
    from mmusim.explore.pct import pct, random_walk

    model = Model(RACES / "race_abort_blocked.toml", (FIX,))
    state = SearchState()
    whole = explore(model, state=state)
    assert whole.verdict == "pass"
    for run in (lambda s: random_walk(model, runs=60, seed=3, seen=s),
                lambda s: pct(model, depth=2, runs=60, seed=3, seen=s)):  # fmt: skip
        seen: set[bytes] = set()
        r = run(seen)
        assert r.verdict == "pass (bounded)" and r.stats.states == len(seen)
        assert 0 < len(seen) <= whole.stats.states
        assert seen <= state.visited.keys()


def test_random_walk_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    race = str(RACES / "race_abort_blocked.toml")
    assert main(["explore", "--no-time", race, "--config", FIX, "--random-walk", "--runs", "20",
                 "--seed", "4"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "verdict  bounded (not complete)" in out
    assert "random walk: 20 runs, seed 4; " in out and "distinct states covered" in out
    with pytest.raises(SystemExit):
        main(["explore", race, "--random-walk", "--pct"])
    assert "not allowed with argument" in capsys.readouterr().err
    err = run_resume(
        ["explore", race, "--random-walk", "--checkpoint", str(tmp_path / "c")], capsys
    )
    assert "--checkpoint: only for the complete search, not with --random-walk" in err
