"""``mmusim compare``: every cell of the matrix has the documented shape, the verdicts that
follow from each system's documented behaviour hold (docs/compare.md cites why), the same call
gives the same data, and bad input is one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mmusim.cli import main
from mmusim.compare import ATTACKS, POLICY_NAMES, compare, run_cell

ATTACK_NAMES = [a.name for a in ATTACKS]
CELL_KEYS = {"caught", "attributed_to", "attribution_right", "reason", "recovered", "outcome"}


@pytest.fixture(scope="module")
def matrix() -> dict[str, Any]:
    return compare(timing=False)


def cell(matrix: dict[str, Any], policy: str, attack: str) -> dict[str, Any]:
    row = next(p for p in matrix["policies"] if p["name"] == policy)
    return row["attacks"][attack]  # type: ignore[no-any-return]


def test_every_policy_and_attack_has_a_well_formed_cell(matrix: dict[str, Any]) -> None:
    assert [p["name"] for p in matrix["policies"]] == list(POLICY_NAMES)
    assert [a["name"] for a in matrix["attacks"]] == ATTACK_NAMES
    for row in matrix["policies"]:
        assert set(row["attacks"]) == set(ATTACK_NAMES), row["name"]
        for name, c in row["attacks"].items():
            assert set(c) >= CELL_KEYS, (row["name"], name)
            assert isinstance(c["caught"], bool) and isinstance(c["recovered"], bool)
            assert c["outcome"] and isinstance(c["outcome"], str)
            if not c["caught"]:
                assert c["outcome"].startswith(("not caught", "grown")), c
        for key in ("areas", "virtual_pages", "frames", "page_table_pages", "pte_writes",
                    "shootdowns"):  # fmt: skip
            assert isinstance(row["costs"][key], int), (row["name"], key)
        assert row["costs"]["cycles_per_second"] is None  # timing=False


def test_the_same_call_gives_the_same_matrix(matrix: dict[str, Any]) -> None:
    again = compare(["zephyr-mapped", "nanos-growsdown", "rethinkdb-coroutines"], timing=False)
    rows = {p["name"]: p for p in matrix["policies"]}
    for row in again["policies"]:
        assert row == rows[row["name"]]


# -- verdicts that follow from each system's documented behaviour --------------------------------


def test_no_protection_catches_nothing_and_the_writes_land_in_the_neighbours(
    matrix: dict[str, Any],
) -> None:
    for attack in ATTACK_NAMES:
        c = cell(matrix, "none", attack)
        assert not c["caught"] and "wrote over" in c["outcome"], (attack, c)


def test_guard_pages_catch_a_probed_big_frame_but_not_an_unprobed_one(
    matrix: dict[str, Any],
) -> None:
    for policy in ("zephyr-mapped", "zephyr-legacy", "haiku-areas", "posix-reserve",
                   "linux-guard-regions", "rethinkdb-coroutines"):  # fmt: skip
        assert cell(matrix, policy, "big-frame-probed")["caught"], policy
        unprobed = cell(matrix, policy, "big-frame-unprobed")
        assert not unprobed["caught"] and "wrote over" in unprobed["outcome"], policy


def test_the_guard_gap_catches_an_unprobed_big_frame(matrix: dict[str, Any]) -> None:
    # The frame lands in the 256-page gap, which placement keeps free: the fault finds the
    # stack above it, and the growth is refused (here by RLIMIT_STACK, vmap_from_vaddr's first
    # test) -- where a one-page guard let the same frame write over the mapping below.
    c = cell(matrix, "nanos-growsdown", "big-frame-unprobed")
    assert c["caught"] and c["reason"] == "SIGSEGV SEGV_MAPERR"
    assert "beyond RLIMIT_STACK" in c["outcome"]


def test_guards_on_both_sides_catch_an_underflow_one_sided_ones_do_not(
    matrix: dict[str, Any],
) -> None:
    for policy in ("zephyr-mapped", "haiku-areas", "posix-reserve", "linux-guard-regions"):
        assert cell(matrix, policy, "underflow")["caught"], policy
    for policy in ("nanos-growsdown", "rethinkdb-coroutines"):
        assert not cell(matrix, policy, "underflow")["caught"], policy


def test_signals_recover_by_siglongjmp_rethinkdb_crashes_zephyr_aborts(
    matrix: dict[str, Any],
) -> None:
    c = cell(matrix, "linux-guard-regions", "overflow-byte")
    assert c["caught"] and c["recovered"] and c["attributed_to"] == "t"
    assert "siglongjmp" in c["outcome"] and c["reason"] == "SIGSEGV SEGV_MAPERR"
    c = cell(matrix, "rethinkdb-coroutines", "overflow-byte")
    assert c["caught"] and not c["recovered"] and c["attributed_to"] == "c"
    assert c["attribution_right"] and "Callstack overflow" in c["outcome"]
    c = cell(matrix, "zephyr-mapped", "deep-recursion")
    assert c["caught"] and not c["recovered"] and c["reason"] == "K_ERR_STACK_CHK_FAIL"


def test_a_zephyr_kernel_stack_overflows_first_into_its_reserved_page(
    matrix: dict[str, Any],
) -> None:
    # Without USERSPACE a K_THREAD_STACK is a K_KERNEL_STACK; with HW_STACK_PROTECTION it
    # reserves a page below the buffer (ARCH_KERNEL_STACK_RESERVED), mapped with the buffer.
    c = cell(matrix, "zephyr-mapped", "overflow-byte")
    assert not c["caught"] and c.get("label") == "reserved" and "wrote over" not in c["outcome"]
    assert cell(matrix, "zephyr-legacy", "overflow-byte")["caught"]


def test_go_grows_where_guard_pages_kill(matrix: dict[str, Any]) -> None:
    for policy in ("go-segmented", "go-copying"):
        for attack in ("overflow-byte", "big-frame-unprobed", "hot-split"):
            c = cell(matrix, policy, attack)
            assert c["caught"] and c["recovered"] and c["reason"] == "morestack", (policy, c)
        c = cell(matrix, policy, "deep-recursion")
        assert c["caught"] and not c["recovered"] and c["attributed_to"] == "g"
        assert "fatal error: stack overflow" in c["outcome"]
    assert cell(matrix, "go-segmented", "hot-split")["splits"] == 100
    assert cell(matrix, "go-copying", "hot-split")["copies"] == 1
    row = next(p for p in matrix["policies"] if p["name"] == "go-copying")
    assert row["costs"]["copies"] >= 5 and row["costs"]["bytes_copied"] > 0
    assert row["costs"]["areas"] == 0 and row["costs"]["splits"] == 0


def test_a_board_that_cannot_give_a_strategy_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    out = compare(["zephyr-mapped", "haiku-areas"], "qemu_x86_atom_virt", timing=False)
    mapped, haiku = out["policies"]
    assert mapped["attacks"] == {} and "identity-mapped" in mapped["unavailable"]
    assert haiku["attacks"]["overflow-byte"]["caught"]
    assert main(["compare", "--board", "qemu_x86_atom_virt", "--policy", "zephyr-mapped",
                 "--no-timing"]) == 0  # fmt: skip
    assert "not run on this board:" in capsys.readouterr().out


def test_the_runtime_and_go_strategies_run_in_pae_mode_too() -> None:
    out = compare(["posix-reserve", "go-copying"], "qemu_x86", timing=False)
    for row in out["policies"]:
        for name, c in row["attacks"].items():
            assert c.get("label") != "error", (row["name"], name, c)
    assert out["policies"][0]["attacks"]["overflow-byte"]["recovered"]


def test_a_kernel_assertion_in_a_cell_is_its_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    import mmusim.compare as mc
    from mmusim.kernel import KernelAssert

    def broken(policy: str, attack: str, board: str) -> dict[str, Any]:
        raise KernelAssert("k_thread_create: something Zephyr would assert on")

    monkeypatch.setattr(mc, "run_cell", broken)
    row = mc.compare(["none"], timing=False)["policies"][0]
    c = row["attacks"]["overflow-byte"]
    assert c["label"] == "error" and "k_thread_create" in c["outcome"] and not c["caught"]


def test_an_unknown_cell_is_refused() -> None:
    with pytest.raises(KeyError):
        run_cell("no-such-policy", "overflow-byte")
    with pytest.raises(ValueError, match="unknown attack"):
        run_cell("none", "no-such-attack")


# -- the command ---------------------------------------------------------------------------------


def test_cli_json_and_svg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    svg = tmp_path / "m.svg"
    argv = ["compare", "--policy", "none", "--policy", "haiku-areas", "--json", "--svg", str(svg),
            "--no-timing"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in out["policies"]] == ["none", "haiku-areas"]
    assert svg.read_text(encoding="utf-8").startswith("<svg")
    assert main(["compare", "--policy", "none", "--no-timing"]) == 0
    text = capsys.readouterr().out
    assert "none" in text and "silent" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--policy", "zephyr"], "--policy: unknown strategy 'zephyr'"),
        (["--board", "qemu_arm"], "--board: unknown board 'qemu_arm'"),
        (["--svg", "/nonexistent-dir/m.svg", "--policy", "none"], "--svg: cannot write"),
    ],
)
def test_cli_bad_input_is_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", "--no-timing", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
