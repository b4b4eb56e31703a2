"""The picture and the terminal table of ``mmusim compare`` (mmusim.render.compare), on a result
dict built here: one cell per (policy, attack), coloured by kind, with tooltips, escaped text,
the same bytes every time."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from mmusim.render.compare import (
    KIND_FILL,
    cell_kind,
    label_of,
    render_compare_svg,
    render_compare_text,
)

SVG = "{http://www.w3.org/2000/svg}"
ATTACKS = ["overflow-byte", "overflow-page", "big-frame-unprobed", "big-frame-probed",
           "underflow", "deep-recursion", "hot-split"]  # fmt: skip
POLICIES = [
    ("zephyr-mapped", "Zephyr"), ("zephyr-legacy", "Zephyr"), ("none", "Zephyr"),
    ("haiku-areas", "Haiku"), ("posix-reserve", "POSIX"), ("linux-guard-regions", "Linux"),
    ("nanos-growsdown", "nanos"), ("rethinkdb-coroutines", "RethinkDB"), ("go-segmented", "Go"),
    ("go-copying", "Go"),
]  # fmt: skip

RECOVERED = {"caught": True, "attributed_to": "t", "attribution_right": True,
             "reason": "SIGSEGV SEGV_MAPERR", "recovered": True,
             "outcome": "the stack grew by one page"}  # fmt: skip
DIED = {"caught": True, "attributed_to": "main", "attribution_right": False,
        "reason": "K_ERR_STACK_CHK_FAIL", "recovered": False,
        "outcome": "the kernel aborted main, not t"}  # fmt: skip
MISSED = {"caught": False, "attributed_to": None, "attribution_right": None, "reason": None,
          "recovered": False, "outcome": "the write went through <silently> & hit a neighbour"}  # fmt: skip
KINDS = [("recovered", RECOVERED), ("died", DIED), ("missed", MISSED)]


def kind_at(i: int, j: int) -> str:
    return KINDS[(i + j) % 3][0]


def result() -> dict[str, Any]:
    policies = []
    for i, (name, system) in enumerate(POLICIES):
        go = system == "Go"
        policies.append({
            "name": name, "system": system, "what": f"{name}: one line",
            "attacks": {a: dict(KINDS[(i + j) % 3][1]) for j, a in enumerate(ATTACKS)},
            "costs": {"areas": i, "virtual_pages": 6, "frames": 1, "page_table_pages": 3,
                      "pte_writes": 2, "shootdowns": 1, "cycles_per_second": 1000.5 * i,
                      "splits": 4 if go else None, "copies": 2 if go else None,
                      "bytes_copied": 8192 if go else None},
        })  # fmt: skip
    return {
        "stack_size": 16384,
        "attacks": [{"name": a, "what": f"{a} <described> & more"} for a in ATTACKS],
        "policies": policies,
    }


def cells(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if (g.get("class") or "").startswith("cell ")]


def test_kinds_and_labels() -> None:
    assert [cell_kind(c) for _, c in KINDS] == ["recovered", "died", "missed"]
    assert [label_of(c) for _, c in KINDS] == ["grown", "aborted", "silent"]
    assert label_of({**DIED, "reason": "SIGSEGV SEGV_ACCERR"}) == "killed"
    assert label_of({**RECOVERED, "outcome": "a handler siglongjmp'd out"}) == "longjmp"
    assert label_of({**RECOVERED, "label": "split"}) == "split"
    assert cell_kind(None) == "n/a"


def test_svg_has_one_cell_per_policy_and_attack_with_the_fill_of_its_kind() -> None:
    root = ET.fromstring(render_compare_svg(result()))
    found = cells(root)
    assert len(found) == len(POLICIES) * len(ATTACKS)
    for n, g in enumerate(found):
        i, j = divmod(n, len(ATTACKS))
        kind = kind_at(i, j)
        assert g.get("class") == f"cell {kind}"
        rect = g.find(f"{SVG}rect")
        assert rect is not None and rect.get("fill") == KIND_FILL[kind]
    fills = {KIND_FILL[k] for k, _ in KINDS}
    assert len(fills) == 3  # three kinds, three colours


def test_every_cell_has_a_tooltip_with_outcome_and_reason() -> None:
    root = ET.fromstring(render_compare_svg(result()))
    for n, g in enumerate(cells(root)):
        i, j = divmod(n, len(ATTACKS))
        title = g.find(f"{SVG}title")
        assert title is not None and title.text
        assert title.text.startswith(f"{POLICIES[i][0]} / {ATTACKS[j]}: ")
        outcome = KINDS[(i + j) % 3][1]["outcome"]
        assert outcome in title.text and "reason: " in title.text


def test_wrong_attribution_is_marked() -> None:
    root = ET.fromstring(render_compare_svg(result()))
    for g in cells(root):
        marked = g.find(f"{SVG}polygon") is not None
        assert marked == (g.get("class") == "cell died")  # DIED blames the wrong thread
        if marked:
            title = g.find(f"{SVG}title")
            assert title is not None and "attributed to: main (WRONG)" in (title.text or "")


def test_svg_escapes_text() -> None:
    svg = render_compare_svg(result())
    assert "&lt;silently&gt; &amp; hit" in svg
    assert "<silently>" not in svg and "<described>" not in svg
    root = ET.fromstring(svg)
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}title"))
    assert "<silently> & hit" in texts  # parsed back to the original text


def test_svg_is_self_contained_and_deterministic() -> None:
    svg = render_compare_svg(result())
    assert svg == render_compare_svg(result())
    for outside in ("<script", "@import", "href=", "url(http", "@font-face"):
        assert outside not in svg
    root = ET.fromstring(svg)
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "label"]
    assert labels.count("silent") == sum(kind_at(i, j) == "missed"
                                         for i in range(len(POLICIES))
                                         for j in range(len(ATTACKS)))  # fmt: skip


def test_svg_shows_costs_and_go_columns() -> None:
    root = ET.fromstring(render_compare_svg(result()))
    nums = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "num"]
    for head in ("areas", "vpages", "frames", "PTE w", "shootd", "splits", "copies"):
        assert head in nums
    assert "9,004" in nums  # go-copying's cycles per second
    assert nums.count("-") == 2 * (len(POLICIES) - 2)  # splits/copies: only the Go rows


def test_text_has_one_line_per_policy_and_fits() -> None:
    text = render_compare_text(result())
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 110
    for i, (name, system) in enumerate(POLICIES):
        rows = [ln for ln in lines if ln.split()[:2] == [name, system]]
        assert len(rows) == 1, name
        words = rows[0].split()[2:]
        assert len(words) == len(ATTACKS)
        for j, word in enumerate(words):
            kind = kind_at(i, j)
            want = {"recovered": "grown", "died": "aborted*", "missed": "silent"}[kind]
            assert word == want
    assert "\x1b" not in text
    assert text == render_compare_text(result())


def test_text_lists_costs_and_wrong_attributions() -> None:
    text = render_compare_text(result())
    assert "shootd" in text and "cycles/s" in text
    notes = " ".join(text.split("wrong attributions:\n", 1)[1].split())  # unwrapped
    n_died = sum(kind_at(i, j) == "died" for i in range(len(POLICIES)) for j in range(len(ATTACKS)))
    assert notes.count("attributed to: main (WRONG)") == n_died
    go = [ln for ln in text.splitlines() if ln.startswith("go-copying ") and "," in ln]
    assert go and go[0].split()[6:8] == ["4", "2"]  # splits, copies


def test_missing_cells_and_costs_do_not_break_it() -> None:
    r = result()
    del r["policies"][0]["attacks"]["hot-split"]
    r["policies"][1]["costs"] = {}
    root = ET.fromstring(render_compare_svg(r))
    assert sum(g.get("class") == "cell na" for g in cells(root)) == 1
    assert "n/a" in render_compare_text(r)
