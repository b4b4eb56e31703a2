"""The result of ``mmusim compare`` as a picture and as a terminal table.

The result is plain data (what ``mmusim compare --json`` prints): the stack size, the attacks
(``name``, ``what``) and the policies, each with its ``name``, ``system``, ``what``, one entry per
attack (``caught``, ``attributed_to``, ``attribution_right``, ``reason``, ``recovered``,
``outcome``) and its ``costs``. This module only draws it: it imports nothing of
``mmusim.compare`` or ``mmusim.cli``.

Each (policy, attack) cell is one of three kinds::

    recovered   caught, and the program went on (the stack grew, a handler longjmp'd out)  green
    died        caught, and the thread or process died (killed by a signal, aborted)       amber
    missed      not caught: the access went through silently                               red

with a one-word label (``label_of``) and, when the fault was blamed on the wrong thread or
stack (``attribution_right`` is False), a mark. ``render_compare_svg`` draws the matrix, a costs
block to its right and a legend; every cell has a ``<title>`` tooltip with the full outcome
sentence, the reason and the attribution. ``render_compare_text`` is the same for a terminal:
one word per cell, then the costs, then the wrong attributions as footnotes. Both are
deterministic: the same dict gives the same bytes.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape

__all__ = [
    "KIND_FILL",
    "cell_kind",
    "label_of",
    "render_compare_svg",
    "render_compare_text",
]

Cell = Mapping[str, Any]

#: The fill of each kind of cell (and of an attack the policy was not run against).
KIND_FILL = {
    "recovered": "#a6d96a",
    "died": "#fee08b",
    "missed": "#f46d43",
    "n/a": "#f0f0f0",
}
_KIND_TEXT = {
    "recovered": "caught, and the program went on",
    "died": "caught, and the thread or process died",
    "missed": "not caught: the access went through",
    "n/a": "not run",
}

# Words of the outcome sentence that name how a caught program went on, first match wins.
_RECOVERY_WORDS = (
    ("longjmp", "longjmp"),
    ("grew", "grown"),
    ("grow", "grown"),
    ("split", "split"),
    ("copied", "copied"),
    ("copy", "copied"),
    ("handler", "handled"),
)


def cell_kind(cell: Cell | None) -> str:
    """``recovered``, ``died`` or ``missed`` (``n/a`` for a cell that is not there)."""
    if cell is None:
        return "n/a"
    if not cell.get("caught"):
        return "missed"
    return "recovered" if cell.get("recovered") else "died"


def label_of(cell: Cell | None) -> str:
    """The cell's one word (at most 9 characters): ``cell["label"]`` if the result names one,
    else ``silent`` when not caught; when caught and recovered, how (``grown``, ``longjmp``,
    ``split``, ``copied``, ``handled``; else ``recovered``); when caught and dead, ``killed``
    (a signal), ``aborted`` (a kernel fatal error, ``K_ERR_*``) or ``died``."""
    if cell is None:
        return "n/a"
    given = cell.get("label")
    if isinstance(given, str) and given:
        return given[:9]
    kind = cell_kind(cell)
    if kind == "missed":
        return "silent"
    if kind == "recovered":
        outcome = str(cell.get("outcome") or "").lower()
        for word, label in _RECOVERY_WORDS:
            if word in outcome:
                return label
        return "recovered"
    reason = str(cell.get("reason") or "")
    if reason.startswith("SIG"):
        return "killed"
    if reason.startswith("K_ERR"):
        return "aborted"
    return "died"


def _wrong(cell: Cell | None) -> bool:
    return cell is not None and cell.get("attribution_right") is False


def _cells(policy: Mapping[str, Any], attacks: Sequence[Mapping[str, Any]]) -> list[Cell | None]:
    got = policy.get("attacks") or {}
    return [got.get(a["name"]) for a in attacks]


def _tooltip(policy: Mapping[str, Any], attack: Mapping[str, Any], cell: Cell | None) -> str:
    head = f"{policy['name']} / {attack['name']}"
    if cell is None:
        return f"{head}: not run"
    parts = [f"{head}: {cell.get('outcome') or _KIND_TEXT[cell_kind(cell)]}"]
    parts.append(f"reason: {cell.get('reason') or 'none'}")
    who = cell.get("attributed_to")
    if who is not None or cell.get("attribution_right") is not None:
        right = cell.get("attribution_right")
        verdict = "right" if right is True else "WRONG" if right is False else ""
        parts.append(f"attributed to: {who if who is not None else 'nobody'}"
                     + (f" ({verdict})" if verdict else ""))  # fmt: skip
    return "; ".join(parts)


# -- costs -----------------------------------------------------------------------------------

# (key, header) of the costs columns, in order; splits and copies only mean something for the
# policies that have them (None elsewhere, shown as "-").
_COSTS = (
    ("areas", "areas"),
    ("virtual_pages", "vpages"),
    ("frames", "frames"),
    ("pte_writes", "PTE w"),
    ("shootdowns", "shootd"),
    ("splits", "splits"),
    ("copies", "copies"),
    ("cycles_per_second", "cycles/s"),
)
_COST_TEXT = (
    "areas: mappings the live stack holds; vpages: virtual pages they span, guards included; "
    "frames: page frames it holds; PTE w: PTE writes and shootd: TLB shootdowns of create + "
    "destroy; splits, copies: segmented / copying stacks only; cycles/s: create + destroy cycles "
    "per second of wall-clock time (not part of the model)"
)


def _cost(costs: Mapping[str, Any], key: str) -> str:
    value = costs.get(key)
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}"
    return str(value)


# -- text ------------------------------------------------------------------------------------

# Short column headers for the attacks mmusim compare runs; any other name is cut to fit.
_SHORT = {
    "overflow-byte": "ovf-byte",
    "overflow-page": "ovf-page",
    "big-frame-unprobed": "frame-unp",
    "big-frame-probed": "frame-prb",
    "underflow": "underflow",
    "deep-recursion": "recursion",
    "hot-split": "hot-split",
}
_COL = 10  # one attack column: a 9-character word and its mark


_TEXT_KEY = (
    "caught and went on: grown, longjmp (a handler on the alternate stack jumped back), split, "
    "copied (Go's morestack); caught and died: killed (a signal), aborted (a kernel fatal "
    "error), crashed (the handler's abort), thrown (Go's fatal error); not caught: silent, "
    "reserved (into the thread's own stack object, below its buffer); * the fault was blamed on "
    "the wrong owner (see the notes at the end)"
)


def _short(name: str) -> str:
    return _SHORT.get(name, name[: _COL - 1])


def render_compare_text(result: Mapping[str, Any]) -> str:
    """A plain-text matrix (one row per policy, one word per cell, ``*`` marks a wrong
    attribution), a key to the columns, a costs table and the wrong attributions as numbered
    footnotes. No colour; lines fit in 110 columns (footnotes are wrapped)."""
    attacks = list(result.get("attacks") or [])
    policies = list(result.get("policies") or [])
    name_w = max([6, *(len(str(p["name"])) for p in policies)])
    sys_w = max([6, *(len(str(p.get("system", ""))) for p in policies)])
    size = result.get("stack_size")
    lines = [f"mmusim compare: {len(attacks)} attacks on {len(policies)} stack strategies"
             + (f", {size}-byte stacks" if size else "")]  # fmt: skip
    lines.append("")
    head = f"{'policy':<{name_w}}  {'system':<{sys_w}}  " + "".join(
        f"{_short(a['name']):<{_COL}}" for a in attacks
    )
    lines += [head.rstrip(), "-" * len(head.rstrip())]
    notes: list[str] = []
    for p in policies:
        row = f"{p['name']:<{name_w}}  {p.get('system', ''):<{sys_w}}  "
        for a, cell in zip(attacks, _cells(p, attacks), strict=True):
            word = label_of(cell)
            if _wrong(cell):
                word += "*"
                notes.append(_tooltip(p, a, cell))
            row += f"{word:<{_COL}}"
        lines.append(row.rstrip())
    lines.append("")
    lines += textwrap.wrap(_TEXT_KEY, width=108)
    for a in attacks:
        lines += textwrap.wrap(
            f"{_short(a['name'])} = {a['name']}: {a.get('what', '')}",
            width=108,
            subsequent_indent="    ",
        )
    lines += ["", *_costs_text(policies, name_w)]
    missing = [p for p in policies if p.get("unavailable")]
    if missing:
        lines += ["", "not run on this board:"]
        for p in missing:
            lines += textwrap.wrap(f"{p['name']}: {p['unavailable']}", width=108,
                                   subsequent_indent="   ")  # fmt: skip
    if notes:
        lines += ["", "wrong attributions:"]
        for i, note in enumerate(notes, 1):
            lines += textwrap.wrap(f"{i}. {note}", width=108, subsequent_indent="   ")
    return "\n".join(lines) + "\n"


def _costs_text(policies: Sequence[Mapping[str, Any]], name_w: int) -> list[str]:
    widths = [max(len(h), 6) for _, h in _COSTS]
    widths[-1] = 10
    head = f"{'costs':<{name_w}}  " + "  ".join(
        f"{h:>{w}}" for (_, h), w in zip(_COSTS, widths, strict=True)
    )
    out = [head, "-" * len(head)]
    for p in policies:
        costs = p.get("costs") or {}
        cols = [f"{_cost(costs, k):>{w}}" for (k, _), w in zip(_COSTS, widths, strict=True)]
        out.append(f"{p['name']:<{name_w}}  " + "  ".join(cols))
    out += textwrap.wrap(_COST_TEXT, width=108)
    return out


# -- SVG ---------------------------------------------------------------------------------------

_LEFT, _TOP = 8, 96  # the matrix's first row
_NAME_W = 170  # policy name and system
_CELL_W, _CELL_H, _ROW_H = 84, 26, 32
_COST_W, _COST_GAP = 58, 28
_RATE_EXTRA = 20  # the last costs column (cycles per second) is this much wider
_CHAR_W = 7  # monospace 11px, rounded up
_LEGEND_LINE = 18
_STYLE = (
    "text{font-family:monospace;font-size:11px;fill:#222222}"
    ".title{font-size:14px;font-weight:bold}"
    ".name{font-weight:bold}"
    ".system{fill:#666666;font-size:10px}"
    ".head{text-anchor:middle;font-weight:bold}"
    ".label{text-anchor:middle}"
    ".num{text-anchor:end}"
    ".mark{fill:#222222}"
)


def render_compare_svg(result: Mapping[str, Any]) -> str:
    """A standalone SVG: the matrix of outcomes (a row per policy, a column per attack, each cell
    coloured by kind with its word inside and a tooltip), the costs to its right, a legend below.
    No external fonts, CSS or scripts; deterministic."""
    attacks = list(result.get("attacks") or [])
    policies = list(result.get("policies") or [])
    size = result.get("stack_size")
    title = (f"mmusim compare: {len(attacks)} attacks on {len(policies)} stack strategies"
             + (f" ({size}-byte stacks)" if size else ""))  # fmt: skip
    grid_x = _LEFT + _NAME_W
    costs_x = grid_x + len(attacks) * _CELL_W + _COST_GAP
    width = max(costs_x + len(_COSTS) * _COST_W + _RATE_EXTRA + 8, len(title) * 9 + 20)
    body: list[str] = [*_attack_heads(attacks, grid_x), *_cost_heads(costs_x)]
    for i, p in enumerate(policies):
        y = _TOP + i * _ROW_H
        body += _row(p, attacks, i, y, grid_x, costs_x, width)
    legend_y = _TOP + len(policies) * _ROW_H + 20
    notes = textwrap.wrap(_COST_TEXT, width=(width - 2 * _LEFT) // 6)  # 10px: ~6px a character
    legend = _legend(legend_y, notes)
    height = legend_y + _LEGEND_LINE * (len(_LEGEND) + 1) + 14 * len(notes) + 12
    head = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f"<title>{escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{_LEFT}" y="22" class="title">{escape(title)}</text>',
        f'<text x="{_LEFT}" y="40">one row per stack strategy, one column per attack; hover a '
        "cell for what happened</text>",
    ]
    return "\n".join([*head, *body, *legend, "</svg>"]) + "\n"


def _attack_heads(attacks: Sequence[Mapping[str, Any]], x0: int) -> list[str]:
    """Each attack's name over its column, on two lines when it is long, with its description
    as a tooltip."""
    out = []
    for j, a in enumerate(attacks):
        name = str(a["name"])
        first, _, second = name.rpartition("-") if len(name) > 11 else ("", "", name)
        cx = x0 + j * _CELL_W + _CELL_W // 2
        tip = escape(f"{name}: {a.get('what', '')}")
        out.append(f'<g class="attack"><title>{tip}</title>')
        if first:
            out.append(f'<text x="{cx}" y="{_TOP - 22}" class="head">{escape(first)}</text>')
        out.append(f'<text x="{cx}" y="{_TOP - 9}" class="head">{escape(second)}</text>')
        out.append("</g>")
    return out


def _cost_heads(x0: int) -> list[str]:
    out = [f'<text x="{x0}" y="{_TOP - 38}" class="name">costs of one stack</text>']
    for j, (_, h) in enumerate(_COSTS):
        x = _cost_x(x0, j)
        out.append(f'<text x="{x}" y="{_TOP - 9}" class="num">{escape(h)}</text>')
    return out


def _cost_x(x0: int, j: int) -> int:
    """Where the numbers of costs column ``j`` end (they are right-aligned)."""
    extra = _RATE_EXTRA if j == len(_COSTS) - 1 else 0
    return x0 + (j + 1) * _COST_W + extra - 6


def _row(
    p: Mapping[str, Any],
    attacks: Sequence[Mapping[str, Any]],
    i: int,
    y: int,
    grid_x: int,
    costs_x: int,
    width: int,
) -> list[str]:
    mid = y + _ROW_H // 2
    out = []
    if i % 2:  # zebra stripes: a row is easier to follow across to its costs
        out.append(f'<rect x="0" y="{y}" width="{width}" height="{_ROW_H}" fill="#f7f7f7"/>')
    tip = escape(f"{p['name']} ({p.get('system', '')}): {p.get('what', '')}")
    out += [
        f'<g class="policy"><title>{tip}</title>',
        f'<text x="{_LEFT}" y="{mid - 1}" class="name">{escape(str(p["name"]))}</text>',
        f'<text x="{_LEFT}" y="{mid + 11}" class="system">{escape(str(p.get("system", "")))}'
        "</text>",
        "</g>",
    ]
    for j, (a, cell) in enumerate(zip(attacks, _cells(p, attacks), strict=True)):
        out += _cell(p, a, cell, grid_x + j * _CELL_W, y + (_ROW_H - _CELL_H) // 2)
    costs = p.get("costs") or {}
    for j, (key, _) in enumerate(_COSTS):
        x = _cost_x(costs_x, j)
        out.append(f'<text x="{x}" y="{mid + 4}" class="num">{escape(_cost(costs, key))}</text>')
    return out


def _cell(
    p: Mapping[str, Any], a: Mapping[str, Any], cell: Cell | None, x: int, y: int
) -> list[str]:
    kind = cell_kind(cell)
    w, h = _CELL_W - 4, _CELL_H
    out = [
        f'<g class="cell {kind.replace("/", "")}">',
        f"<title>{escape(_tooltip(p, a, cell))}</title>",
        f'<rect x="{x + 2}" y="{y}" width="{w}" height="{h}" rx="3" fill="{KIND_FILL[kind]}" '
        'stroke="#555555"/>',
        f'<text x="{x + 2 + w // 2}" y="{y + h // 2 + 4}" class="label">'
        f"{escape(label_of(cell))}</text>",
    ]
    if _wrong(cell):
        out.append(_mark(x + 2 + w, y))
    out.append("</g>")
    return out


def _mark(right: int, top: int) -> str:
    """The wrong-attribution mark: a dark triangle in the cell's top-right corner."""
    return f'<polygon class="mark" points="{right - 11},{top} {right},{top} {right},{top + 11}"/>'


_LEGEND = (
    ("recovered", "caught, and the program went on: grown, longjmp, split, copied"),
    (
        "died",
        "caught, and the thread or process died: killed (a signal), aborted (K_ERR_*), "
        "crashed (abort()), thrown (Go's fatal error)",
    ),
    (
        "missed",
        "not caught: the access went through (silent; reserved: into the thread's own "
        "stack object)",
    ),
)


def _legend(y: int, notes: Sequence[str]) -> list[str]:
    """The three kinds of cell, the mark, then ``notes`` (what the costs mean), a line each."""
    out = []
    for i, (kind, text) in enumerate(_LEGEND):
        yy = y + _LEGEND_LINE * i
        out.append(
            f'<rect x="{_LEFT}" y="{yy}" width="24" height="12" fill="{KIND_FILL[kind]}" '
            'stroke="#555555"/>'
        )
        out.append(f'<text x="{_LEFT + 32}" y="{yy + 10}">{escape(text)}</text>')
    yy = y + _LEGEND_LINE * len(_LEGEND)
    out.append(f'<rect x="{_LEFT}" y="{yy}" width="24" height="12" fill="#ffffff" '
               'stroke="#555555"/>')  # fmt: skip
    out.append(_mark(_LEFT + 24, yy))
    out.append(f'<text x="{_LEFT + 32}" y="{yy + 10}">the fault was blamed on the wrong owner '
               "(the tooltip says whom)</text>")  # fmt: skip
    for i, line in enumerate(notes):
        yy_note = yy + _LEGEND_LINE + 12 + 14 * i
        out.append(f'<text x="{_LEFT}" y="{yy_note}" class="system">{escape(line)}</text>')
    return out
