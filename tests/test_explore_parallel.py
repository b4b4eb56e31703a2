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
import random
from pathlib import Path

import pytest

from mmusim.cli import main
from mmusim.explore import Model, explore
from mmusim.explore.parallel import explore_parallel
from mmusim.scenario import BUNDLED_DIR
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
        (["--workers", "2", "--checkpoint", "TMP/c"], "not with --checkpoint"),
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
    import os

    import mmusim.explore.parallel as parallel

    def dies(*args: object) -> None:
        os._exit(3)

    monkeypatch.setattr(parallel, "_worker", dies)  # the workers are forked: they see it
    with pytest.raises(RuntimeError, match=r"worker \d died \(exit code 3\)"):
        explore_parallel(RACES / "race_abort_blocked.toml", workers=2)
