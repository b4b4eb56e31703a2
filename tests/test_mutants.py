"""Mutants (``mmusim.mutants``): each deliberately broken kernel is caught on the explorer
scenarios (``mmusim/scenarios/explore``) by a seeded schedule within a small budget, and the real
kernel passes the same schedules.

A run boots the scenario with the mutant's Kconfig line added, checks the invariants after every
step (``assert_invariants``) and, once quiescent, ``check_quiescent`` (no stack mapping leaked).
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from mmusim.kconfig import load_config
from mmusim.kernel import Kernel, KernelAssert
from mmusim.kernel.invariants import (
    InvariantViolation,
    assert_invariants,
    check_no_leaked_stack,
    check_quiescent,
)
from mmusim.mutants import MUTANTS, mutant_config_lines
from mmusim.scenario import BUNDLED_DIR, Scenario, bundled_scenarios, load_scenario, run_scenario

EXPLORE_DIR = BUNDLED_DIR / "explore"
SCENARIOS = ("race_self_abort", "race_ipi_abort", "race_reuse", "race_stale_tlb")
BUDGET: tuple[int | None, ...] = (None, *range(10))  # round robin, then seeds 0..9


def scenario(name: str, extra: tuple[str, ...] = ()) -> Scenario:
    """The explorer scenario ``name`` with Kconfig lines ``extra`` applied after its own."""
    scn = load_scenario(EXPLORE_DIR / f"{name}.toml")
    if not extra:
        return scn
    lines = [(str(scn.path), 0, text) for text in scn.config_lines]
    lines += [("mutant", i + 1, text) for i, text in enumerate(extra)]
    config = load_config(scn.board, extra_lines=lines)
    return attrs.evolve(scn, config=config, config_lines=scn.config_lines + extra)


def boot(scn: Scenario, check: bool = True) -> Kernel:
    return Kernel(scn.config.values, stacks=scn.stack_objects(), main_body=scn.main,
                  bodies=scn.bodies, check=assert_invariants if check else None)  # fmt: skip


def run_once(scn: Scenario, seed: int | None) -> tuple[list[str], Kernel]:
    """Problems of one seeded run: the invariant violation or kernel assertion that stopped it,
    else what ``check_quiescent`` finds at the end (empty: the run is clean)."""
    k = boot(scn)
    try:
        k.run(seed=seed, max_steps=scn.max_steps)
    except (InvariantViolation, KernelAssert) as e:
        return [str(e)], k
    return check_quiescent(k), k


def in_switch_window(k: Kernel, problems: list[str]) -> bool:
    """Whether the only problem is reference section 6.7's window in the REAL kernel: a dead
    thread still in arch_switch on its CPU (``_current`` already moved on, the context not yet
    saved) whose stack another CPU's deferred-cleanup drain has just unmapped."""
    window = [
        f"self-unmap: CPU {c.id} runs {t.name} "
        for c in k.cpus
        if (t := c.running_on) is not None and t.dead and c.ctx is t and c.current is not t
    ]
    lines = [ln.strip() for p in problems for ln in p.splitlines()[1:]]
    return bool(window and lines) and all(ln.startswith(tuple(window)) for ln in lines)


# -- the table ----------------------------------------------------------------------------------


def test_mutant_names_and_lines() -> None:
    assert set(MUTANTS) == {"no-cleanup-lock", "defer-no-drain", "self-unmap", "abort-cleanup-leak"}
    for name, (line, description) in MUTANTS.items():
        assert mutant_config_lines(name) == (line,)
        assert description and "\n" not in description
        symbol = line.removeprefix("CONFIG_").removesuffix("=y")
        cfg = load_config("qemu_x86_64", extra_lines=[("mutant", 1, line)])
        assert cfg.values[symbol] is True
        assert load_config("qemu_x86_64").values[symbol] is False  # default n


def test_the_slot_check_knows_the_kernels_slot_footprint() -> None:
    from mmusim.kernel import abort, invariants

    slot = abort.SLOT
    assert slot == (frozenset(), frozenset({invariants._SLOT}))


def test_unknown_mutant_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown mutant 'self_unmap' \(allowed: abort-cleanup"):
        mutant_config_lines("self_unmap")


# -- each mutant is caught ----------------------------------------------------------------------

CATCHES = [
    # mutant, scenario, what catches it
    ("no-cleanup-lock", "race_reuse", "slot-lock: "),
    ("defer-no-drain", "race_self_abort", "slot-lost: "),
    ("self-unmap", "race_self_abort", "self-unmap: "),
    ("abort-cleanup-leak", "race_reuse", "leak: "),
]


@pytest.mark.parametrize(("mutant", "name", "caught_by"), CATCHES)
def test_each_mutant_is_caught_within_the_budget(mutant: str, name: str, caught_by: str) -> None:
    broken = scenario(name, mutant_config_lines(mutant))
    for seed in BUDGET:
        problems, k = run_once(broken, seed)
        if any(caught_by in p for p in problems):
            break
    else:
        pytest.fail(f"{mutant} not caught by {caught_by!r} on {name} with seeds {BUDGET}")
    if mutant == "self-unmap":  # not the real kernel's 6.7 window: the thread is still _current
        assert not in_switch_window(k, problems)
    # The same schedule passes on the real kernel: the mutant, not the scenario, breaks it.
    clean, _ = run_once(scenario(name), seed)
    assert clean == []


@pytest.mark.parametrize(
    ("mutant", "name"),
    [("defer-no-drain", "race_self_abort"), ("abort-cleanup-leak", "race_reuse")],
)
def test_a_leak_shows_once_quiescent(mutant: str, name: str) -> None:
    # Without the per-step checks, a finished run still shows the leaked stack mapping.
    k = boot(scenario(name, mutant_config_lines(mutant)), check=False)
    k.run()
    assert k.quiescent() and check_no_leaked_stack(k)
    k = boot(scenario(name), check=False)
    k.run()
    assert k.quiescent() and check_no_leaked_stack(k) == []


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_every_mutant_breaks_some_explorer_scenario(mutant: str) -> None:
    for name in SCENARIOS:
        broken = scenario(name, mutant_config_lines(mutant))
        if any(run_once(broken, seed)[0] for seed in BUDGET[:3]):
            return
    pytest.fail(f"{mutant}: every scenario passed")


# -- the real kernel ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_real_kernel_passes_every_seed(name: str) -> None:
    # race_stale_tlb turns the shootdown off; here it runs with the shootdown (the real kernel).
    extra = ("CONFIG_SIM_TLB_SHOOTDOWN=y",) if name == "race_stale_tlb" else ()
    scn = scenario(name, extra)
    for seed in BUDGET:
        problems, k = run_once(scn, seed)
        # Reference 6.7 is a question for the explorer, and the model's answer is yes: a drain
        # on one CPU can unmap the stack of a thread still in arch_switch on the other. Rare
        # seeds hit it; that one violation is tolerated here, nothing else.
        assert problems == [] or in_switch_window(k, problems), (seed, problems)


def test_without_the_shootdown_a_stale_tlb_entry_is_used() -> None:
    broken = scenario("race_stale_tlb")
    assert broken.config.values["SIM_TLB_SHOOTDOWN"] is False
    for seed in BUDGET:
        problems, _ = run_once(broken, seed)
        if any("stale-tlb: " in p for p in problems):
            break
    else:
        pytest.fail(f"no stale TLB use with seeds {BUDGET}")
    fixed, k = run_once(scenario("race_stale_tlb", ("CONFIG_SIM_TLB_SHOOTDOWN=y",)), seed)
    assert fixed == [] or in_switch_window(k, fixed)


# -- the scenario files -------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_explorer_scenarios_pass_with_their_seed_and_round_robin(name: str) -> None:
    path = EXPLORE_DIR / f"{name}.toml"
    for seed in ("own", None):
        r = run_scenario(path) if seed == "own" else run_scenario(path, seed=None)
        assert r.passed, (seed, r.failures)
        assert "explore" in r.facts  # the exploration root


def test_explorer_scenarios_are_not_bundled_runs() -> None:
    assert sorted(p.stem for p in EXPLORE_DIR.glob("*.toml")) == sorted(SCENARIOS)
    assert not any(Path(p).parent == EXPLORE_DIR for p in bundled_scenarios())
