"""``mmusim quiz translate``: every answer agrees with ``mmusim translate`` run on the problem's
image (thousands of generated questions, in order, A/D bits carried), the same seed prints the
same bytes in any process, and bad input is one line with exit code 2."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from mmusim.cli import main
from mmusim.quiz import translate_problem

MODES = ("32", "pae", "ia32e")


def cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("level", [1, 2, 3])
def test_every_answer_agrees_with_mmusim_translate(mode: str, level: int, tmp_path: Path) -> None:
    img = tmp_path / "q.img"
    asked = 0
    faults = 0
    for seed in range(36):
        code, text = cli(["quiz", "translate", "--seed", str(seed), "--mode", mode, "--level",
                          str(level), "--json", "--image-out", str(img)])  # fmt: skip
        assert code == 0
        problem = json.loads(text)
        flags = [f"--{name}" for name, on in problem["control"].items() if on]
        for q in problem["questions"]:
            code, line = cli(["translate", "--image", str(img), "--image-out", str(img),
                              "--mode", mode, "--cr3", hex(problem["cr3"]), *flags, "--access",
                              q["access"], "--cpl", str(q["cpl"]), "--json", hex(q["vaddr"])])  # fmt: skip
            assert code == 0
            got = json.loads(line)
            want = q["answer"]
            assert got["ok"] == want["ok"], (seed, q, got)
            if want["ok"]:
                assert got["paddr"] == want["paddr"], (seed, q, got)
            else:
                faults += 1
                assert (got["vector"], got["error_code"], got["cr2"]) == (
                    want["vector"], want["error_code"], want["cr2"]), (seed, q, got)  # fmt: skip
            asked += 1
    assert asked >= 36 * 8 and 0 < faults < asked  # both kinds of answer are asked


def test_levels_bring_in_their_rights() -> None:
    codes = {translate_problem(s, "ia32e", 3).to_json()["control"]["smap"] for s in range(20)}
    assert codes == {True, False}
    one = [translate_problem(s, "ia32e", 1).to_json()["control"] for s in range(20)]
    assert all(c["wp"] and not c["nxe"] and not c["smep"] for c in one)
    fetch_faults = [
        a["answer"]["error_code"] & 0x10
        for s in range(30)
        for a in translate_problem(s, "pae", 2).to_json()["questions"]
        if not a["answer"]["ok"]
    ]
    assert any(fetch_faults)  # an instruction fetch refused by XD or SMEP


def test_the_same_seed_prints_the_same_bytes_in_any_process() -> None:
    argv = ["quiz", "translate", "--seed", "7", "--mode", "pae", "--level", "3", "--answers"]
    _, here = cli(argv)
    _, again = cli(argv)
    there = subprocess.run([sys.executable, "-m", "mmusim", *argv], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    assert here == again == there
    assert "Answers (each walk as `mmusim walk` prints it):" in here
    _, other = cli(["quiz", "translate", "--seed", "8", "--mode", "pae", "--level", "3"])
    assert other.splitlines()[3:] != here.splitlines()[3:]


def test_the_image_is_the_one_before_any_access(tmp_path: Path) -> None:
    img = tmp_path / "q.img"
    assert cli(["quiz", "translate", "--seed", "2", "--image-out", str(img)])[0] == 0
    assert img.read_bytes() == translate_problem(2).image


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["quiz", "walk"], "argument KIND: invalid choice: 'walk'"),
        (["quiz", "translate", "--seed", "-1"], "seed -1 is negative"),
        (["quiz", "translate", "--level", "4"], "argument --level"),
        (["quiz", "translate", "--mode", "64"], "argument --mode"),
        (["quiz", "translate", "--image-out", "/nonexistent-dir/q.img"], "--image-out: cannot"),
        (["quiz", "tlb", "--image-out", "/tmp/x.img"], "--image-out: only translate"),
    ],
)
def test_bad_input_is_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code  # type: ignore[assignment]
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("mode", MODES)
def test_tlb_answers_follow_from_who_invalidated(mode: str) -> None:
    from mmusim.quiz import tlb_problem

    seen = set()
    for seed in range(150):
        p = tlb_problem(seed, mode)
        warmed = {c for c, _ in p.warm}
        cleared = {"none": set(), "invlpg on CPU 0": {0}, "shootdown": {0, 1}}[p.invalidation]
        for (cpu, _access), a in zip(p.questions, p.answers, strict=True):
            stale = a["ok"] and a["stale"]
            seen.add((p.invalidation, stale))
            if stale:  # only a CPU that cached the entry and was not told can use it
                assert cpu in warmed and cpu not in cleared, (seed, p.to_json())
            if p.change == "unmap" and cpu in cleared | ({0, 1} - warmed):
                assert not a["ok"] and a["cr2"] == 0x0040_2000, (seed, p.to_json())
    assert ("none", True) in seen and ("shootdown", True) not in seen
    assert ("invlpg on CPU 0", True) in seen  # CPU 1 kept the stale entry


def test_tlb_problems_are_the_same_every_time() -> None:
    argv = ["quiz", "tlb", "--seed", "11", "--mode", "pae", "--answers"]
    assert cli(argv) == cli(argv)
    code, text = cli(["quiz", "tlb", "--seed", "11", "--json"])
    assert code == 0 and json.loads(text)["questions"][0]["answer"]


def test_guard_answers_follow_z_x86_check_guard_page() -> None:
    # Zephyr asks only whether CR2 is in _current's guard: the writer's own guard is reason 2
    # (stack overflow), another thread's guard reason 0 (a CPU exception), a stack no fault.
    from mmusim.quiz import guard_problem

    kinds = set()
    for seed in range(40):
        p = guard_problem(seed)
        a = p.to_json()["answer"]
        region = a["region"]
        if "guard of" in region:
            own = region.split("guard of ")[1].split(" ")[0] == p.writer
            assert a["fault"] and a["blamed"] == p.writer, (seed, a)
            assert a["reason"] == (2 if own else 0), (seed, a)
            assert f"ZEPHYR FATAL ERROR {a['reason']}" in "\n".join(a["console"])
            kinds.add("own guard" if own else "other guard")
        else:
            assert region.startswith("stack of") and not a["fault"], (seed, a)
            kinds.add("stack")
    assert kinds == {"own guard", "other guard", "stack"}


def test_guard_problems_are_the_same_every_time() -> None:
    argv = ["quiz", "guard", "--seed", "5", "--answers"]
    assert cli(argv) == cli(argv)
    assert json.loads(cli(["quiz", "guard", "--seed", "5", "--json"])[1])["writer"]
