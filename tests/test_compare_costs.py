"""Per-stack costs of every strategy (mmusim.compare.costs): the same keys for kernel and runtime
policies, the numbers each layout must give, and only the rate left to the clock."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from mmusim.compare.costs import COST_KEYS, KERNEL_POLICIES, policy_costs
from mmusim.kconfig import load_config
from mmusim.kernel import PAGE, StackGeometry
from mmusim.runtime.policies import RUNTIME_POLICIES

SIZE = 16384
ALL = [*KERNEL_POLICIES, *RUNTIME_POLICIES]


@functools.cache
def costs(name: str) -> dict[str, Any]:
    return policy_costs(name, SIZE, cycles=3)


def test_kernel_policy_names() -> None:
    assert list(KERNEL_POLICIES) == ["zephyr-mapped", "zephyr-legacy", "none"]


@pytest.mark.parametrize("name", ALL)
def test_every_policy_gives_every_key(name: str) -> None:
    c = costs(name)
    assert tuple(c) == COST_KEYS
    for key in ("areas", "virtual_pages", "frames", "page_table_pages", "pte_writes",
                "shootdowns"):  # fmt: skip
        assert isinstance(c[key], int) and c[key] >= 0, (key, c[key])
    assert isinstance(c["cycles_per_second"], float) and c["cycles_per_second"] > 0
    assert c["splits"] is None and c["copies"] is None and c["bytes_copied"] is None


def test_mapped_stack_is_one_area_between_two_guards() -> None:
    cfg = load_config("qemu_x86_64", extra_lines=[("t", 1, "CONFIG_THREAD_STACK_MEM_MAPPED=y")])
    obj_pages = StackGeometry.from_config(cfg.values).obj_len(SIZE, False) // PAGE
    c = costs("zephyr-mapped")
    assert c["areas"] == 1
    assert c["virtual_pages"] == obj_pages + 2
    assert c["frames"] == 0  # an alias of the .noinit object: no frame of its own
    assert c["pte_writes"] == 2 * obj_pages  # mapped on create, cleared on destroy
    assert c["shootdowns"] == 3  # one per guard page made, one for the unmap


def test_in_place_stacks_hold_no_mapping() -> None:
    for name in ("zephyr-legacy", "none"):
        c = costs(name)
        assert (c["areas"], c["virtual_pages"], c["frames"], c["shootdowns"]) == (0, 0, 0, 0)
    assert costs("none")["pte_writes"] == 0
    assert costs("zephyr-legacy")["pte_writes"] == 1  # the guard made read-only, never reset


@pytest.mark.parametrize(
    ("name", "areas", "pages"),
    [
        ("haiku-areas", 3, SIZE // PAGE + 2),
        ("posix-reserve", 1, SIZE // PAGE + 2),
        ("linux-guard-regions", 1, SIZE // PAGE + 2),
        ("nanos-growsdown", 1, 1),
        ("rethinkdb-coroutines", 2, SIZE // PAGE),
    ],
)
def test_runtime_layouts(name: str, areas: int, pages: int) -> None:
    c = costs(name)
    assert (c["areas"], c["virtual_pages"]) == (areas, pages)
    assert c["frames"] == 1  # the pushed top page
    assert c["page_table_pages"] == 3  # a bare machine: PDPT, PD, PT
    assert c["pte_writes"] == 2 and c["shootdowns"] == 1


def test_runtime_policies_are_looked_up_when_called(monkeypatch: pytest.MonkeyPatch) -> None:
    """A policy added to RUNTIME_POLICIES later (the go-* ones) is measured without changes."""
    cls = RUNTIME_POLICIES["posix-reserve"]
    monkeypatch.setitem(RUNTIME_POLICIES, "late-arrival", cls)
    assert policy_costs("late-arrival", SIZE, cycles=1)["areas"] == 1


def test_deterministic_but_for_the_rate() -> None:
    for name in ("zephyr-mapped", "haiku-areas"):
        a, b = (policy_costs(name, SIZE, cycles=1) for _ in range(2))
        a.pop("cycles_per_second")
        b.pop("cycles_per_second")
        assert a == b


def test_unknown_policy_and_bad_cycles() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        policy_costs("no-such-policy")
    with pytest.raises(ValueError, match="cycles"):
        policy_costs("none", cycles=0)
