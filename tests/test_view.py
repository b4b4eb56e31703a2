"""``mmusim view``: what the recording holds, the page it writes, and bad input (issue 14).

The page itself is driven in a real browser by ``tests/test_view_browser.py``; here the recording
is checked against the kernel it recorded: the same schedule as ``mmusim run``, the fault and the
stale-TLB write at the steps where they happen, and the same bytes for the same input.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from mmusim.cli import main
from mmusim.explore import Model, minimal
from mmusim.explore.trace import to_json
from mmusim.render.view import Recording, record_scenario, record_trace
from mmusim.render.view_html import render_html
from mmusim.scenario import BUNDLED_DIR, run_scenario

RACE = BUNDLED_DIR / "explore" / "race_self_abort.toml"
REAR = BUNDLED_DIR / "test_guard_page_rear.toml"


@pytest.fixture(scope="module")
def race_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The minimal trace of the self-abort race, as ``mmusim explore --trace`` writes it."""
    model = Model(RACE)
    result = minimal(model)
    assert result.violation is not None
    path = tmp_path_factory.mktemp("view") / "race.json"
    path.write_text(json.dumps(to_json(model, result), indent=1))
    return path


def page_data(html: str) -> dict[str, Any]:
    m = re.search(r'<script id="v-data" type="application/json">(.*?)</script>', html, re.S)
    assert m is not None
    data: dict[str, Any] = json.loads(m.group(1))
    return data


def engine_steps(steps: list[dict[str, Any]]) -> int:
    """The kernel's steps among recorded ones (a timer tick is the clock jumping, not a step)."""
    return sum(s["kind"] not in ("start", "tick") for s in steps)


def events(rec: Recording, kind: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(s, e) for s in rec.steps for e in s["events"] if e["kind"] == kind]


def test_the_race_trace_shows_the_dying_cpu_writing_through_its_stale_tlb_entry(
    race_trace: Path,
) -> None:
    rec = record_trace(race_trace)
    data = json.loads(race_trace.read_text())
    assert len([s for s in rec.steps if s["phase"] == "trace"]) == len(data["steps"])
    # The violation names the CPU and the page its stack lost.
    message = data["violation"]["messages"][0]
    m = re.search(r"CPU (\d+) runs (\S+) on its stack at \S+, but page (0x[0-9a-f]+)", message)
    assert m is not None, message
    cpu, thread, page = int(m.group(1)), m.group(2), m.group(3)
    ((vstep, _),) = events(rec, "violation")
    assert vstep["i"] == len(data["steps"])  # the last step of the trace breaks the invariant
    stale = events(rec, "stale")
    assert stale, "no step writes through a stale TLB entry"
    step, event = stale[0]
    # After the violation, the dying CPU runs on alone and its next step writes the return address
    # of `call z_x86_switch` on the unmapped stack page: its TLB still translates it.
    assert step["phase"] == "consequence" and step["cpu"] == cpu
    assert step["routine"] == "arch_switch" and "z_x86_switch" in step["label"]
    assert step["i"] == vstep["i"] + 1
    assert event["address"] == page and "writes page" in event["text"]
    assert "PTE" in event["walk"] and "not present" in event["walk"]
    before = rec.pool[rec.steps[step["i"] - 1]["s"]["tlbs"]][cpu]
    entry = next(r for r in before if r["page"] == page)
    assert entry["stale"] == "not mapped"
    threads = rec.pool[step["s"]["threads"]]
    assert next(t for t in threads if t["thread"] == thread)["state"] == "dead"
    assert rec.meta["verdict"].startswith("VIOLATION  invariant: self-unmap")


def test_a_scenario_is_recorded_with_the_schedule_and_log_of_mmusim_run() -> None:
    rec = record_scenario(REAR)
    result = run_scenario(REAR)
    assert engine_steps(rec.steps) == result.steps
    assert rec.meta["log"] == list(result.log)
    assert rec.meta["verdict"] == "PASS  test_guard_page_rear"
    ((step, event),) = events(rec, "fault")
    fault = result.faults[0]
    assert event["address"] == f"{fault['cr2']:#x}" and f"reason {fault['reason']}" in event["text"]
    assert "not present" in event["walk"] and f"CR2={fault['cr2']:#x}" in event["walk"]
    # The console gets Zephyr's lines at the step of the fault, not before.
    assert rec.steps[step["i"] - 1]["log"] == 0 < step["log"]
    assert "Page fault at address" in rec.meta["log"][0]


def test_every_bundled_scenario_records(tmp_path: Path) -> None:
    for path in sorted(BUNDLED_DIR.glob("*.toml")):
        rec = record_scenario(path, max_steps=60)
        assert 1 < len(rec.steps) <= 62, path  # a timer tick may add one
        html = render_html(rec)
        assert page_data(html)["meta"]["title"] == rec.meta["title"]


def test_the_same_input_gives_the_same_page_byte_for_byte(tmp_path: Path, race_trace: Path) -> None:
    for src in (race_trace, REAR):
        a, b = tmp_path / "a.html", tmp_path / "b.html"
        assert main(["view", str(src), "--out", str(a)]) == 0
        assert main(["view", str(src), "--out", str(b)]) == 0
        assert a.read_bytes() == b.read_bytes()


def test_the_page_is_self_contained_and_escapes_its_data(race_trace: Path) -> None:
    rec = record_trace(race_trace)
    rec.meta["title"] = "</script><script>alert(1)</script>__DATA__"
    rec.meta["notes"].append("<!-- & -->")
    html = render_html(rec)
    assert html.count("</script>") == 2  # the data's and the program's, nothing from the title
    assert "alert(1)</script>" not in html
    assert page_data(html)["meta"]["title"] == rec.meta["title"]
    for remote in ("http://", "https://", "//cdn", "src=", "@import"):
        assert remote not in re.sub(r'xmlns=\\?"http://www.w3.org/2000/svg\\?"', "", html), remote


def test_the_walks_do_not_change_the_run(race_trace: Path) -> None:
    # The recorder walks a copy of the page tables and reads the TLBs without a lookup: a kernel
    # replayed with it ends in the state a plain replay reaches (the fingerprint covers the
    # page-table bytes, A/D bits included, and every TLB entry).
    from mmusim.explore.trace import load_trace, replay_steps
    from mmusim.render.view import CONSEQUENCE_STEPS, _Recorder, _run_alone

    model = Model(RACE)
    _, steps = load_trace(race_trace)
    plain = replay_steps(model, steps)
    k = model.reset()
    rec = Recording({"log": []})
    r = _Recorder(rec, k, "trace", preemptions=True)
    replay_steps(model, steps, k=k, before=r.before, after=r.after)
    _run_alone(model, k, r, 1)  # the consequence: CPU 1's write through its stale entry
    for _ in range(CONSEQUENCE_STEPS):
        if (1, "step") not in model.actions(plain):
            break
        model.step(plain, (1, "step"))
    assert len(rec.steps) > len(steps) + 1
    assert any(e.get("walk") for s in rec.steps for e in s["events"])  # it did walk
    assert Model.fingerprint(k) == Model.fingerprint(plain)
    assert k.cpus[0].hw.tlb.hits == plain.cpus[0].hw.tlb.hits  # not even a counter moved


def test_view_writes_the_page_and_says_so(
    tmp_path: Path, race_trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "race.html"
    assert main(["view", str(race_trace), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"wrote {out}: ") and "VIOLATION  invariant: self-unmap" in said
    assert "step 0 is the exploration root" in said
    assert page_data(out.read_text())["meta"]["source"] == "trace"


def test_view_without_out_writes_next_to_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["view", str(REAR)]) == 0
    assert (tmp_path / "test_guard_page_rear.html").is_file()


def test_max_steps_cuts_the_recording_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "v.html"
    assert main(["view", str(REAR), "--out", str(out), "--max-steps", "10"]) == 0
    assert (
        "note: the view stops after 10 steps (--max-steps); the run goes on"
        in capsys.readouterr().out
    )
    assert len(page_data(out.read_text())["steps"]) == 11


def test_a_kernel_assertion_is_what_the_page_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # issue_119098_leak runs until k_thread_create asserts (the scenario expects it): exit 0, and
    # the page ends at the step that asserts, with the assertion as its event.
    leak = BUNDLED_DIR / "issue_119098_leak.toml"
    out = tmp_path / "v.html"
    assert main(["view", str(leak), "--out", str(out)]) == 0
    assert "PASS  issue_119098_leak" in capsys.readouterr().out
    data = page_data(out.read_text())
    last = data["steps"][-1]
    assert [e["kind"] for e in last["events"]] == ["assert"]
    assert "the scenario makes Zephyr assert: setup_thread_stack" in last["events"][0]["text"]
    assert engine_steps(data["steps"]) == run_scenario(leak).steps


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["view", "TMP/none.toml"], "mmusim view: error: TMP/none.toml: no such file"),
        (["view", "TMP"], "mmusim view: error: TMP: is a directory"),
        (["view", "REAR", "--max-steps", "0"], "--max-steps: 0 is out of range (at least 1)"),
        (["view", "REAR", "--max-steps", "x"], "argument --max-steps: 'x' is not a number"),
        (["view", "REAR", "--scenario", "REAR"], "--scenario: only for a trace"),
        (["view", "REAR", "--out", "TMP"], "--out: TMP is a directory"),
        (["view", "REAR", "--out", "TMP/no/v.html"], "--out: TMP/no/v.html: no such directory"),
        (["view", "TMP/bad.json"], "TMP/bad.json: not JSON"),
        (["view", "TMP/changed.json"], "step 3 of the trace expects CPU 0 step"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, race_trace: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    (tmp_path / "bad.json").write_text("{ nope")
    data = json.loads(race_trace.read_text())
    data["steps"][2]["label"] = "something else"
    (tmp_path / "changed.json").write_text(json.dumps(data))
    argv = [a.replace("TMP", str(tmp_path)).replace("REAR", str(REAR)) for a in argv]
    with pytest.raises(SystemExit) if "'x'" in message else _nothing() as _:
        code = main(argv)
        assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message.replace("TMP", str(tmp_path)) in err


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
