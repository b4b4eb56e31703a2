"""Fidelity to Zephyr's sources (issue 10): each behaviour here was once answered differently by
mmusim. Every verdict comes from running the real kernel -- a scenario under many schedules, or a
complete search by the explorer; docs/fidelity.md cites the Zephyr functions.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from mmusim.explore import Model, explore, minimal
from mmusim.explore.trace import load_trace, replay_steps, to_json
from mmusim.kernel import Kernel, Op, StackObject
from mmusim.kernel.sched import IA32_SWAP_WORDS, X86_64_SWITCH_BYTES
from mmusim.scenario import BUNDLED_DIR
from mmusim.scenario.load import load_scenario
from mmusim.scenario.run import run_scenario

RACES = BUNDLED_DIR / "explore"
FIX = "CONFIG_SIM_CLEANUP_WAITS_FOR_SWITCH=y"
EVICT = "CONFIG_SIM_TLB_EVICTION=y"


# -- 1. next_up() halts a halting _current ------------------------------------------------------


@pytest.mark.parametrize("seed", [None, *range(16)])
def test_remote_abort_of_a_thread_that_sleeps_first_never_runs_its_body_on(
    seed: int | None,
) -> None:
    # kernel/sched.c next_up(): whatever the schedule, the line after k_sleep() never runs and
    # k_thread_abort() returns at tick 0 -- the aborted thread dies in its own z_swap if it blocks
    # before the IPI arrives.
    r = run_scenario(BUNDLED_DIR / "smp_abort_thread_that_blocks.toml", seed=seed)
    assert r.passed, r.failures


def test_the_scenario_schedule_halts_the_target_in_its_own_swap() -> None:
    # Under seed 27, a takes the scheduler lock in k_sleep (so the IPI waits) and next_up(), in
    # a's own z_swap, halts it -- not the IPI handler, not main.
    k = load_scenario(BUNDLED_DIR / "smp_abort_thread_that_blocks.toml").boot(None)
    rng = random.Random(27)
    who_halted_a = []
    while True:
        acts = k.actions()
        if not acts:
            if k.wake_sleepers():
                continue
            break
        a = rng.choice(acts)
        c = k.cpus[a[0]]
        p = c.irq_pending if c.irq is not None else c.ctx.pending
        if getattr(p, "label", "") == "a: set _THREAD_DEAD":
            who_halted_a.append("the IPI handler" if c.irq is not None else c.ctx.name)
        k.do(a)
    assert who_halted_a == ["a"]
    assert run_scenario(BUNDLED_DIR / "smp_abort_thread_that_blocks.toml", seed=27).passed


@pytest.mark.parametrize("seed", [None, *range(12)])
def test_suspending_a_thread_running_on_another_cpu(seed: int | None) -> None:
    # z_thread_halt(terminate=false): SUSPENDING, IPI, halt_queue; resumed later, it ends normally.
    r = run_scenario(BUNDLED_DIR / "smp_suspend_running_thread.toml", seed=seed)
    assert r.passed, r.failures


def test_clear_halting_on_self_suspension_loses_a_pending_abort() -> None:
    # halt_thread(t, _THREAD_SUSPENDED) ends in clear_halting(t), which clears ABORTING too.
    r = run_scenario(BUNDLED_DIR / "smp_abort_lost_to_self_suspend.toml")
    assert r.passed, r.failures
    assert r.facts["a_resumed"] == [2] and r.facts["abort_returned"] == [2]


# -- 2, 3. each architecture's context switch ---------------------------------------------------


def _switch_kernel(x86_64: bool, room: int) -> Kernel:
    """A thread that leaves ``room`` bytes above its stack's lowest writable byte, then sleeps."""
    cfg: dict[str, object] = dict(
        X86_STACK_PROTECTION=True, THREAD_STACK_INFO=True, SRAM_BASE_ADDRESS=0x100000,
        SRAM_SIZE=4096, KERNEL_VM_BASE=0x100000, KERNEL_VM_SIZE=0x800000,
    )  # fmt: skip
    if x86_64:
        cfg.update(X86_64=True, USE_SWITCH=True, SMP=True, MP_MAX_NUM_CPUS=2)
        cfg.update(THREAD_STACK_MEM_MAPPED=True, THREAD_ABORT_NEED_CLEANUP=True)
        usable = 4096 + 4096 - 8  # buffer + reserved page - the initial frame
    else:
        cfg.update(X86_PAE=True, MP_MAX_NUM_CPUS=1)
        usable = 4096 - 20  # ia32's initial frame leaves ESP 20 bytes below the top
    body = (Op("push", n=usable - room), Op("sleep", n=1))
    main = (Op("create", target="t", stack="s", label="b", n=0, prio=-1), Op("join", target="t"))
    k = Kernel(cfg, stacks=(StackObject("s", 4096, False),), main_body=main, bodies={"b": body})
    k.run()
    return k


@pytest.mark.parametrize(
    ("x86_64", "needed"), [(True, X86_64_SWITCH_BYTES), (False, IA32_SWAP_WORDS * 4)]
)
def test_the_switch_needs_exactly_its_frame(x86_64: bool, needed: int) -> None:
    # z_x86_switch: the 8-byte slot at RSP-8; arch_swap: seven 4-byte words.
    fits = _switch_kernel(x86_64, needed)
    assert fits.faults == [] and fits.threads["t"].exit_reason == "returned"
    word = 8 if x86_64 else 4
    over = _switch_kernel(x86_64, needed - word)
    assert len(over.faults) == 1
    f = over.faults[0]
    assert f["faulting"] == "t" and f["reason"] == 2
    if x86_64:  # a #PF on the exception stack, blamed on _current: the incoming thread
        assert f["vector"] == 14 and f["thread"] != "t" and over.halted is not None
        assert "E: Halting system" in over.log
    else:  # the #PF frame cannot be pushed either: #DF, blamed on t, still _current
        assert f["vector"] == 8 and f["thread"] == "t" and over.halted is None
        assert "E: Double Fault" in over.log
        assert over.threads["t"].exit_reason == "fatal: Stack overflow"


# -- 5. the what-if fix waits on every unmap path ------------------------------------------------


def test_an_immediate_unmap_has_the_window_too() -> None:
    r = explore(Model(RACES / "race_abort_blocked.toml"))
    assert r.violation is not None and "self-unmap" in r.violation.messages[0]
    fixed = explore(Model(RACES / "race_abort_blocked.toml", (FIX,)))
    assert fixed.violation is None and fixed.complete


def test_race_reuse_needs_two_preemptions_and_the_self_abort_drain() -> None:
    assert explore(Model(RACES / "race_reuse.toml"), max_preemptions=1).violation is None
    found = minimal(Model(RACES / "race_reuse.toml"))
    v = found.violation
    assert v is not None and v.preemptions == 2 and "self-unmap" in v.messages[0]
    # The unmap that opens the window is a self-abort's drain, not the reuse check.
    unmap_at = max(i for i, s in enumerate(v.steps) if s.routine == "k_mem_unmap_phys_guard")
    routines = [s.routine for s in v.steps[:unmap_at]]
    drain = max(i for i, r in enumerate(routines) if r.startswith("k_thread_abort_cleanup"))
    assert routines[drain] == "k_thread_abort_cleanup"


# -- the race's consequence: SIM_TLB_EVICTION ------------------------------------------------------


def test_with_eviction_the_race_ends_in_a_misattributed_stack_overflow() -> None:
    m = Model(RACES / "race_self_abort.toml", (EVICT,), ignore=("self-unmap",))
    found = minimal(m)
    v = found.violation
    assert v is not None and v.messages[0].startswith("misattributed-fault:")
    assert any(s.kind == "evict" for s in v.steps)
    k = m.reset()
    for s in v.steps:
        m.step(k, (s.cpu, s.kind))
    assert k.halted is not None
    assert k.log[-3:-1] == [
        ">>> ZEPHYR FATAL ERROR 2: Stack overflow on CPU 1".join(["E: ", ""]),
        f"E: Current thread: {k.thread_id(k.threads['idle 01']):#x} (idle 01)",
    ]


def test_with_eviction_and_the_fix_the_complete_search_passes() -> None:
    # race_self_abort's complete search (9,369 states, about 30 s) is docs/explore.md's transcript,
    # which tests/test_docs.py runs and compares.
    r = explore(Model(RACES / "race_abort_blocked.toml", (EVICT, FIX)))
    assert r.violation is None and r.complete and r.stats.states > 500


def test_ignore_names_are_checked() -> None:
    with pytest.raises(ValueError, match="no such invariant"):
        Model(RACES / "race_self_abort.toml", ignore=("self-unmapp",))


# -- the ledger ------------------------------------------------------------------------------------

ROOT = BUNDLED_DIR.parent.parent
_MARKER = re.compile(r"#\s*DEVIATION\(([a-z0-9-]+)\):\s*\S")
_ROW = re.compile(r"^\| `([a-z0-9-]+)` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$")


def _markers() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in sorted((ROOT / "mmusim").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for m in _MARKER.finditer(line):
                out.setdefault(m.group(1), []).append(f"{path.relative_to(ROOT)}:{n}")
    return out


def _ledger() -> dict[str, tuple[str, str, str]]:
    text = (ROOT / "docs" / "fidelity.md").read_text()
    section = text.split("## Deviations", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = _ROW.match(line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} is listed twice"
            rows[m.group(1)] = (m.group(2).strip(), m.group(3).strip(), m.group(4).strip())
    return rows


def test_every_deviation_marker_is_in_the_ledger_and_back() -> None:
    markers, ledger = _markers(), _ledger()
    assert len(markers) >= 10 and len(ledger) >= 10  # the parsers found something
    missing = {name: where for name, where in markers.items() if name not in ledger}
    stale = sorted(set(ledger) - set(markers))
    assert not missing, f"marked in the code, not in docs/fidelity.md: {missing}"
    assert not stale, f"in docs/fidelity.md, marked nowhere in mmusim/: {stale}"
    for name, (what, why, knob) in ledger.items():
        assert len(what) > 20 and len(why) > 20 and knob, name


def test_the_ledger_parsers_see_a_marker_and_a_row() -> None:
    # The check above must be able to fail: its patterns match the forms they look for.
    assert _MARKER.search("    # DEVIATION(some-name): what and why")
    assert not _MARKER.search("    # DEVIATION: no name")
    assert _ROW.match("| `some-name` | what | why | none |")


def test_an_eviction_trace_replays_with_its_ignored_invariants(tmp_path: Path) -> None:
    m = Model(RACES / "race_abort_blocked.toml", (EVICT,), ignore=("self-unmap",))
    found = minimal(m)
    assert found.violation is not None
    path = tmp_path / "t.json"
    path.write_text(json.dumps(to_json(m, found)))
    data, steps = load_trace(path)
    assert data["ignore"] == ["self-unmap"] and any(s.kind == "evict" for s in steps)
    again = Model(data["scenario"], data["config"], ignore=data["ignore"])
    k = replay_steps(again, steps)
    assert again.violations(k)[0].startswith("misattributed-fault:")
