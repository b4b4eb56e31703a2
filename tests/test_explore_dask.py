"""``explore --dask ADDRESS``: the complete search on a Dask cluster (issue 15).

The cluster is real: a ``distributed.LocalCluster`` with two worker processes, started here. The
search on it must give the golden verdicts, and for every unbounded search that passes, the golden
count of distinct states (the visited set is split between the two workers' actors, so the count is
the sum of the parts: a state counted in two parts would show here). Also the errors a user meets:
an unreachable scheduler, a bad address, a cluster without workers, workers with other code.
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed  # the dask extra: part of `make test`, not optional for the suite
import pytest

from mmusim.cli import main
from mmusim.explore import Model, checkpoint, explore
from mmusim.explore.cluster import DaskError, explore_dask
from mmusim.explore.parallel import RememberingClaim
from mmusim.explore.search import Key, SearchState, claim_in
from mmusim.scenario import BUNDLED_DIR
from test_explore_checkpoint import ctrl_c_then_resume
from test_explore_golden import GOLDEN
from test_explore_parallel import (
    FIX,
    NO_BOUNDS,
    PARALLEL_CASES,
    report_without_search_counts,
    save_one_process_search,
)
from test_progress import on_terminal

RACES = BUNDLED_DIR / "explore"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A scheduler and two worker processes of one thread each, on this machine."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as c:  # fmt: skip
        yield c.scheduler_address


@pytest.mark.parametrize(("name", "extra", "bound"), PARALLEL_CASES,
                         ids=[c[0] for c in PARALLEL_CASES])  # fmt: skip
def test_a_dask_cluster_gives_the_verdict_and_the_states_of_one_process(
    cluster: str, name: str, extra: tuple[str, ...], bound: int | None
) -> None:
    verdict, states, _, complete, violation = json.loads(GOLDEN.read_text())["cases"][name]
    r = explore_dask(RACES / f"{name.split('/')[0]}.toml", extra, address=cluster,
                     max_preemptions=bound)  # fmt: skip
    assert r.verdict == verdict
    assert r.complete == complete
    if violation is None:
        if bound is None:  # within a bound the count depends on the order (test_explore_parallel)
            assert r.stats.states == states
    else:
        assert r.violation is not None and r.violation.kind == violation[0]
        assert r.violation.messages[0].split(":")[0] == violation[1][0].split(":")[0]


def test_the_report_on_a_dask_cluster_is_the_report_of_one_process(
    cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    race = str(RACES / "race_self_abort.toml")
    outs = []
    for how in ([], ["--dask", cluster]):
        trace = tmp_path / f"t{len(how)}.json"
        assert main(["explore", "--no-time", race, *how, "--trace", str(trace)]) == 1
        outs.append(report_without_search_counts(capsys.readouterr().out))
        assert json.loads(trace.read_text())["steps"]
    assert outs[0].replace("t0.json", "T") == outs[1].replace("t2.json", "T")
    assert "minimal  2 preemptions, 39 steps" in outs[1]


def test_a_passing_search_on_the_cluster_reports_as_one_process(
    cluster: str, capsys: pytest.CaptureFixture[str]
) -> None:
    race = str(RACES / "race_abort_blocked.toml")
    fix = ["--config", "CONFIG_SIM_CLEANUP_WAITS_FOR_SWITCH=y"]
    outs = []
    for how in ([], ["--dask", cluster]):
        assert main(["explore", "--no-time", "--json", race, *fix, *how]) == 0
        out = json.loads(capsys.readouterr().out)
        outs.append((out["verdict"], out["search"]["states"], out["search"]["complete"]))
    assert outs[0] == outs[1] == ("pass", 1141, True)


def one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["explore", str(RACES / "race_abort_blocked.toml"), *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith(
        "mmusim explore: error: --dask"
    )
    return captured.err


def test_an_unreachable_scheduler_is_one_line_naming_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    err = one_line_error(["--dask", address, "--dask-timeout", "1"], capsys)
    assert f"--dask: cannot reach a Dask scheduler at '{address}' within 1 s" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dask", "nonsense://x:1"], "'nonsense://x:1' is not a scheduler address"),
        (["--dask", ""], "'' is not a scheduler address"),
        (["--dask", "tcp://h:1", "--workers", "2"], "not with --workers"),
        (
            ["--dask", "tcp://h:1", "--pct"],
            "--dask: the cluster's workers run the complete search, not with --pct",
        ),
        (["--dask", "tcp://h:1", "--max-states", "5"], "not with --max-states"),
        (["--dask", "tcp://h:1", "--dask-timeout", "0"], "--dask-timeout: 0.0 is out of range"),
        (["--dask", "tcp://h:1", "--dask-timeout", "nan"], "--dask-timeout: nan is out of range"),
        (
            ["--dask", "tcp://h:1", "--dask-timeout", "inf"],
            "(a number of seconds > 0, at most 3600)",
        ),
    ],
)
def test_bad_dask_options(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in one_line_error(argv, capsys)


def test_without_dask_installed_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed: ImportError
    err = one_line_error(["--dask", "tcp://127.0.0.1:1"], capsys)
    assert "pip install 'mmusim[dask]'" in err


def test_a_cluster_without_workers_is_refused() -> None:
    with (
        distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as c,
        pytest.raises(DaskError, match="--dask: the cluster at .* has no workers"),
    ):
        explore_dask(RACES / "race_abort_blocked.toml", address=c.scheduler_address)


def test_workers_with_other_mmusim_code_are_refused(
    cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmusim.explore.cluster as cl

    # this process pretends to run other code; the workers compute their own hash
    monkeypatch.setattr(cl, "search_code_fingerprint", lambda: "0" * 16)
    with pytest.raises(DaskError, match=r"--dask: worker tcp://\S+ runs other mmusim code"):
        explore_dask(RACES / "race_abort_blocked.toml", address=cluster)


def asking(
    shared: dict[bytes, tuple[frozenset[Key], int]], calls: list[int],
    fp: bytes, sleep: frozenset[Key], pre: int,
) -> tuple[bool, frozenset[Key], bool]:  # fmt: skip
    calls.append(1)
    return claim_in(shared, fp, sleep, pre)


def test_a_remembered_claim_answers_as_the_shared_set_would() -> None:
    """``RememberingClaim`` answers some claims without asking: its answers, and the shared set it
    leaves, must be those of asking every time, while other workers claim the same states."""
    rng = random.Random(15)
    keys: list[Key] = [(c, "thread", f"s{i}") for c in range(2) for i in range(3)]
    saved = 0
    for _ in range(200):
        shared: dict[bytes, tuple[frozenset[Key], int]] = {}
        mirror: dict[bytes, tuple[frozenset[Key], int]] = {}
        calls: list[int] = []
        mine = RememberingClaim(functools.partial(asking, shared, calls))
        for _ in range(40):
            fp = bytes([rng.randrange(4)])
            sleep = frozenset(k for k in keys if rng.random() < 0.5)
            pre = rng.randrange(3)
            if rng.random() < 0.4:  # another worker's claim
                claim_in(shared, fp, sleep, pre)
                claim_in(mirror, fp, sleep, pre)
            else:
                assert mine(fp, sleep, pre) == claim_in(mirror, fp, sleep, pre)
            assert shared == mirror
        assert mine.asked == len(calls)
        saved += mine.saved
    assert saved > 100  # it does answer some itself


def test_a_worker_that_leaves_during_the_search_ends_it_with_an_error() -> None:
    import os
    import threading

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as c:  # fmt: skip
        got: list[BaseException | object] = []

        def search() -> None:
            try:
                got.append(explore_dask(RACES / "race_self_abort.toml",
                                        ("CONFIG_SIM_CLEANUP_WAITS_FOR_SWITCH=y",),
                                        address=c.scheduler_address))  # fmt: skip
            except BaseException as e:  # noqa: BLE001 -- the test looks at it
                got.append(e)

        t = threading.Thread(target=search)
        t.start()
        with distributed.Client(c.scheduler_address, set_as_default=False) as client:
            while t.is_alive() and not any("_search" in str(key) for keys in
                                           client.processing().values() for key in keys):  # fmt: skip
                t.join(0.1)
            assert t.is_alive(), got
            t.join(1.0)  # well into the search (about 12 s in all)
            victim = sorted(client.scheduler_info(n_workers=-1)["workers"])[-1]
            with contextlib.suppress(Exception):  # the worker's process exits: no answer
                client.run(os._exit, 1, workers=[victim])
        t.join(60)
        assert not t.is_alive(), "the search waits for a worker that is gone"
    assert len(got) == 1 and isinstance(got[0], DaskError), got
    assert str(got[0]).startswith(f"--dask: worker {victim} left the cluster during the search")


# -- checkpoints and progress on the cluster ------------------------------------------------------


def test_searches_on_the_cluster_paused_for_checkpoints_visit_every_state(cluster: str) -> None:
    """Each pause stops the searches, brings the visited set's parts and the stacks back here, and
    ships them out again to new actors: many pauses must lose no state (and add none)."""
    golden = json.loads(GOLDEN.read_text())["cases"]["race_self_abort/fix"]
    saved: list[int] = []

    def save(st: SearchState) -> None:
        assert len(st.visited) == st.stats.states and (st.stack or st.more)
        saved.append(st.stats.states)

    r = explore_dask(RACES / "race_self_abort.toml", (FIX,), address=cluster, save=save,
                     every=1.0)  # fmt: skip
    assert (r.verdict, r.stats.states, r.complete) == ("pass", golden[1], True)
    assert len(saved) >= 3 and saved == sorted(saved), saved  # about 12 s of search


def test_a_checkpoint_moves_between_one_process_and_the_cluster(
    cluster: str, tmp_path: Path
) -> None:
    """A search saved in one process goes on on the cluster, and one saved on the cluster goes on
    in one process: the same file, both finish with every state."""
    golden = json.loads(GOLDEN.read_text())["cases"]["race_self_abort/fix"]
    race = RACES / "race_self_abort.toml"
    model = Model(race, (FIX,))
    here, there = tmp_path / "here.ckpt", tmp_path / "there.ckpt"
    save_one_process_search(model, here)
    on_cluster = explore_dask(race, (FIX,), address=cluster,
                              state=checkpoint.load(here, model, NO_BOUNDS))  # fmt: skip
    saves = [0]

    def save(st: SearchState) -> None:
        checkpoint.save(there, model, st, NO_BOUNDS)
        saves[0] += 1

    stopped = explore_dask(race, (FIX,), address=cluster, save=save, every=1.0,
                           stop=lambda: saves[0] >= 1)  # fmt: skip
    assert stopped.interrupted and 0 < stopped.stats.states < golden[1]
    alone = explore(model, state=checkpoint.load(there, model, NO_BOUNDS))
    for done in (on_cluster, alone):
        assert (done.verdict, done.stats.states, done.complete) == ("pass", golden[1], True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_saves_a_search_on_the_cluster_and_resume_finishes_it(
    cluster: str, tmp_path: Path, sig: signal.Signals
) -> None:
    # SIGTERM (the client's machine shutting down) too: the cluster's searches pause, the search
    # is saved, exit code 143.
    golden = json.loads(GOLDEN.read_text())["cases"]["race_self_abort/fix"]
    path = tmp_path / "d.ckpt"
    argv = [sys.executable, "-m", "mmusim", "explore", "--no-time", "--no-progress",
            str(RACES / "race_self_abort.toml"), "--config", FIX, "--dask", cluster,
            "--checkpoint", str(path), "--checkpoint-every", "1"]  # fmt: skip
    done = ctrl_c_then_resume(argv, path, sig)
    assert done.returncode == 0, done.stderr
    assert f"search   {golden[1]:,} states" in done.stdout
    assert "verdict  complete" in done.stdout


def test_explore_on_the_cluster_shows_the_whole_search(cluster: str) -> None:
    code, text = on_terminal(["explore", str(RACES / "race_self_abort.toml"), "--config", FIX,
                              "--dask", cluster])  # fmt: skip
    assert code == 0, text
    lines = [t for t in text.split("\r") if t.startswith("explore: ") and " states, " in t]
    assert lines and "states/s" in lines[-1] and "executions" in lines[-1]
    counts = [int(t.split("explore: ")[1].split(" states")[0].split()[-1].replace(",", ""))
              for t in lines]  # fmt: skip
    assert counts == sorted(counts) and counts[-1] > 0
    assert "6,903 states" in text[text.index("PASS") :]


def test_a_worker_lost_after_a_checkpoint_says_how_to_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The cluster part is test_a_worker_that_leaves_during_the_search_ends_it_with_an_error; here
    # the command's line: after a save, the error says where the search was saved.
    import mmusim.cli.explore as cli

    def saved_then_lost(*args: object, save: Any, **kwargs: object) -> None:
        save(SearchState(visited={b"x" * 16: (frozenset(), 0)}, stack=[]))
        raise DaskError("--dask: worker tcp://w:1 left the cluster during the search")

    monkeypatch.setattr(cli, "explore_dask", saved_then_lost)
    path = tmp_path / "lost.ckpt"
    err = one_line_error(["--dask", "tcp://w:1", "--checkpoint", str(path)], capsys)
    assert err.endswith(f"the search saved before is in {path}: go on with the same command "
                        f"and --resume {path}\n")  # fmt: skip
    assert path.is_file()


def test_a_busy_client_does_not_take_its_workers_for_gone(cluster: str) -> None:
    """The client's periodic update of its scheduler info (every 2 s by default; every 2 ms here)
    caches an identity that lists no workers: the search must not read the workers from that
    cache, or it ends, as it did in a long search on a loaded machine, with "worker ... left the
    cluster"."""
    import dask

    with dask.config.set({"distributed.client.scheduler-info-interval": "2ms"}):
        for _ in range(2):
            r = explore_dask(RACES / "race_abort_blocked.toml", (FIX,), address=cluster)
            assert (r.verdict, r.stats.states, r.complete) == ("pass", 1141, True)
