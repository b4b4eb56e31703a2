"""``mmusim map`` of a scenario with a process ([runtime]): its areas, committed and reserved
pages, guard pages, the grows-down gap and coroutine stacks, in text, JSON and SVG
(mmusim.render.procmap)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mmusim.cli import main
from mmusim.render.memmap import MapRow, memory_map, render_svg, render_text
from mmusim.runtime import USER_HI, USER_LO, Process
from mmusim.scenario import BUNDLED_DIR, scenario_kernel

SVG_NS = "{http://www.w3.org/2000/svg}"
PAGE = 4096


def user_rows(name: str, step: int | None = None) -> list[MapRow]:
    k = scenario_kernel(BUNDLED_DIR / f"{name}.toml", step)
    return [r for r in memory_map(k) if USER_LO <= r.start < USER_HI]


def test_the_growsdown_stack_its_boundary_and_its_gap() -> None:
    rows = user_rows("nanos_growsdown_gap")
    low, gap, *stack = rows
    assert (low.start, low.end, low.kind, low.rights) == (
        0x7C00_0000,
        0x7C00_1000,
        "reserved",
        "---",
    )
    assert (gap.start, gap.end, gap.kind) == (0x7C00_1000, 0x7C00_1000 + 256 * PAGE, "gap")
    assert "stack guard gap below 'stack' (256 pages)" in gap.owner
    assert stack[0].start == gap.end and stack[-1].end == 0x7C10_A000  # grown 8 pages, to the gap
    assert all(r.kind == "committed" and r.rights == "rw-u" for r in stack)
    assert "grows down from 0x7c101000" in stack[0].owner
    assert all("'stack' rw-p growsdown" in r.owner for r in stack)


def test_rows_cover_the_user_part_without_overlap_and_in_order() -> None:
    for name in ("nanos_growsdown_gap", "haiku_reserve_16mib", "rethinkdb_coroutine_overflow"):
        rows = user_rows(name)
        assert all(a.end <= b.start for a, b in zip(rows, rows[1:], strict=False)), name
        assert all(r.start < r.end for r in rows)


def test_haiku_three_areas_and_committed_versus_reserved_pages() -> None:
    # after the two mmaps and the altstack (steps 1-3): nothing committed yet in 'stack'
    rows = user_rows("haiku_reserve_16mib", step=4)
    owners = [(r.kind, r.size, r.owner.split(":")[0]) for r in rows]
    assert owners[-3:] == [
        ("guard", PAGE, "'reserve' ---p"),
        ("reserved", 16 * 1024 * 1024 - 2 * PAGE, "'stack' rw-p"),
        ("guard", PAGE, "'reserve' ---p"),
    ]
    after = user_rows("haiku_reserve_16mib")
    committed = [r for r in after if r.kind == "committed" and "'stack'" in r.owner]
    # a page per 64 KiB: 127 below the middle, 127 above, then each guard
    assert len(committed) == 254 and all(r.size == PAGE for r in committed)


def test_coroutine_stacks_their_guards_and_the_alternate_stack() -> None:
    rows = user_rows("rethinkdb_coroutine_overflow")
    by_subject = {(r.subject, r.kind) for r in rows}
    assert ("c2", "guard") in by_subject and ("c1", "guard") in by_subject
    text = render_text(rows)
    assert "guard page of coroutine c2" in text and "stack of coroutine c2" in text
    assert "alternate signal stack of main" in text
    c2 = [r for r in rows if r.subject == "c2" and r.kind == "committed"]
    assert sum(r.size for r in c2) == 3 * PAGE  # the whole usable stack, overflowed


def test_a_kernel_without_a_process_maps_as_before() -> None:
    k = scenario_kernel(BUNDLED_DIR / "test_idle_stack.toml", None)
    assert Process.of(k) is None
    assert not any(r.kind in ("committed", "gap") for r in memory_map(k))


def test_cli_text_json_and_svg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(BUNDLED_DIR / "nanos_growsdown_gap.toml")
    main(["map", path])
    text = capsys.readouterr().out
    assert "0x7c001000-0x7c101000     1M  ---   gap        stack guard gap below 'stack'" in text
    svg = tmp_path / "m.svg"
    main(["map", path, "--json", "--svg", str(svg)])
    doc = json.loads(capsys.readouterr().out)
    gap = [r for r in doc["rows"] if r["kind"] == "gap"]
    assert gap == [
        {
            "start": 0x7C00_1000,
            "end": 0x7C10_1000,
            "size": 256 * PAGE,
            "rights": "---",
            "kind": "gap",
            "owner": "stack guard gap below 'stack' (256 pages): it never grows here, a touch "
            "is SIGSEGV",
            "subject": "stack",
        }
    ]
    root = ET.fromstring(svg.read_text())
    kinds = {g.get("class") for g in root.iter(f"{SVG_NS}g")}
    assert {"row kind-gap", "row kind-committed", "row kind-reserved"} <= kinds
    legend = "".join(t.text or "" for t in root.iter(f"{SVG_NS}text"))
    assert "stack guard gap below a growsdown area" in legend


def test_svg_legend_for_process_rows_only_when_there_are_some() -> None:
    plain = render_svg([MapRow(0, PAGE, "rw-", "stack", "s", "t")], "x")
    assert "growsdown" not in plain
    with_gap = render_svg([MapRow(0, PAGE, "---", "gap", "g", "s")], "x")
    assert "stack guard gap below a growsdown area" in with_gap
