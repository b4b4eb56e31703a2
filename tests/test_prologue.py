"""Function prologues as a property of compiled code (``mmusim.hw.prologue``): the three kinds,
Go's check tiers at their boundaries, and what each does on a Zephyr thread's stack -- an
unprobed big frame jumps the guard, a probed one hits it, a checked one never writes below the
stack (the check fails first: K_ERR_STACK_CHK_FAIL through the oops vector). ``[build]`` stamps
a body's calls with its prologue."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmusim.hw import (
    STACK_BIG,
    STACK_GUARD,
    STACK_SMALL,
    checked_prologue_fails,
    probe_addresses,
)
from mmusim.scenario import ScenarioError, load_scenario, run_scenario
from mmusim.scenario.ops import compiled_with

G = 0x10_0000  # a stackguard0


@pytest.mark.parametrize(
    ("sp", "frame", "fails"),
    [
        (G, 0, True),  # SP at the guard: JLS is taken
        (G + 1, 8, False),
        (G + 1, STACK_SMALL, False),  # the small tier ignores the frame
        (G + 1, STACK_SMALL + 1, True),  # the next tier subtracts frame - StackSmall
        (G + 2, STACK_SMALL + 1, False),
        (G + STACK_BIG - STACK_SMALL, STACK_BIG, True),
        (G + STACK_BIG - STACK_SMALL + 1, STACK_BIG, False),
        (G + 10_000, 10_000 + STACK_SMALL, True),  # the huge tier: the same bound
        (G + 10_001, 10_000 + STACK_SMALL, False),
        (100, 1 << 40, True),  # a frame bigger than the address: a borrow, not a wraparound
    ],
)
def test_checked_prologue_tiers(sp: int, frame: int, fails: bool) -> None:
    assert checked_prologue_fails(sp, frame, G) is fails


def test_a_passed_check_leaves_the_nosplit_room() -> None:
    lo = 0x20_0000
    for frame in (0, 64, 128, 129, 1000, 4096, 4097, 50_000):
        for sp in range(lo + STACK_GUARD - 200, lo + STACK_GUARD + frame + 300, 7):
            if not checked_prologue_fails(sp, frame, lo + STACK_GUARD):
                assert sp - frame >= lo + STACK_GUARD - STACK_SMALL, (sp, frame)


def test_probes_every_page_of_a_big_frame() -> None:
    assert probe_addresses(0x10000, 4096) == []
    assert probe_addresses(0x10000, 4097) == [0xF000]
    assert probe_addresses(0x10000, 3 * 4096 + 8) == [0xF000, 0xE000, 0xD000]


SCENARIO = """\
[scenario]
name = "prologues"
board = "qemu_x86_64"
[stacks]
s = {{ size = 8192 }}
big = {{ size = 8192 }}
{build}
[bodies]
attack = [ {{ op = "call", {frame}{extra} }}, {{ op = "record", fact = "t.state", as = "went_on" }} ]
main = [
    {{ op = "create", thread = "t", stack = "s", body = "attack", prio = -1 }},
    {{ op = "join", thread = "t" }},
]
"""


def run(tmp_path: Path, frame: str, extra: str = "", build: str = "") -> dict:
    path = tmp_path / "p.toml"
    path.write_text(SCENARIO.format(frame=frame, extra=extra, build=build))
    v = run_scenario(load_scenario(path))
    assert v.error is None, v.error
    return {"faults": list(v.faults), "log": "\n".join(v.log), "facts": v.facts}


def test_unprobed_big_frame_jumps_the_mapped_stacks_guard(tmp_path: Path) -> None:
    got = run(tmp_path, "past_bottom = 8192")  # two pages past the bottom: beyond the guard
    assert [f["vector"] for f in got["faults"]] != [32]
    assert not got["faults"] or got["faults"][0]["cr2"] is not None


def test_probed_big_frame_hits_the_guard(tmp_path: Path) -> None:
    got = run(tmp_path, "past_bottom = 8192", ', prologue = "probed"')
    (f,) = got["faults"]
    assert (f["vector"], f["reason"]) == (14, 2)
    assert "went_on" not in got["facts"]


def test_checked_prologue_fails_before_writing(tmp_path: Path) -> None:
    got = run(tmp_path, "past_bottom = 1", ', prologue = "checked"')
    (f,) = got["faults"]
    assert (f["vector"], f["reason"], f["cr2"]) == (32, 2, None)
    assert "fails the stack check" in got["log"]
    assert "went_on" not in got["facts"]


def test_checked_prologue_lets_a_fitting_frame_run(tmp_path: Path) -> None:
    got = run(tmp_path, "frame = 256", ', prologue = "checked", depth = 4')
    assert got["faults"] == [] and "went_on" in got["facts"]


def test_build_section_sets_the_prologue(tmp_path: Path) -> None:
    got = run(tmp_path, "past_bottom = 1", "", '[build]\nprologue = "checked"\n')
    assert [f["vector"] for f in got["faults"]] == [32]
    got = run(tmp_path, "past_bottom = 1", "", '[build]\nprologue_of = { attack = "checked" }\n')
    assert [f["vector"] for f in got["faults"]] == [32]
    # a call's own prologue wins over the build's
    # (a kernel stack's reserved page lies below the buffer: 4097 bytes reach the guard)
    got = run(
        tmp_path, "past_bottom = 4097", ', prologue = "unprobed"', '[build]\nprologue = "checked"\n'
    )
    assert [f["vector"] for f in got["faults"]] == [14]


def test_compiled_with_reaches_nested_bodies() -> None:
    from mmusim.kernel import Op

    ops = (Op("repeat", n=2, body=(Op("call", n=8),)), Op("call", n=8, probe=True))
    out = compiled_with(ops, "checked")
    assert out[0].body[0].prologue == "checked"
    assert out[1].prologue == ""  # probe = true is its own prologue


@pytest.mark.parametrize(
    ("frame", "extra", "build", "message"),
    [
        ("frame = 8", ', prologue = "chekced"', "", "unknown prologue 'chekced'"),
        ("frame = 8, past_bottom = 1", "", "", "exactly one of frame"),
        ("past_bottom = 1", ", depth = 2", "", "one call deep"),
        ("frame = 8", ', probe = true, prologue = "checked"', "", "give one"),
        ("frame = 8", "", '[build]\nprologue = "fast"\n', "unknown prologue 'fast'"),
        ("frame = 8", "", '[build]\nprologue_of = { atack = "probed" }\n', "no body named 'atack'"),
    ],
)
def test_bad_prologues_are_errors(
    tmp_path: Path, frame: str, extra: str, build: str, message: str
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(SCENARIO.format(frame=frame, extra=extra, build=build))
    with pytest.raises(ScenarioError, match=message):
        load_scenario(path)
