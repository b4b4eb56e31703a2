"""The page of ``mmusim view``: a ``Recording`` (``mmusim.render.view``) as one HTML file.

The file is self-contained -- its stylesheet, its script and the recording (JSON) are inline, the
memory maps are inline SVG -- so it works from ``file://`` with no network. The script builds the
panels with ``textContent`` (names from a scenario file are text, never markup); only the SVG that
``render_svg`` drew (which escapes its text) is inserted as markup. The template is
``view.html`` beside this module.
"""

from __future__ import annotations

import html
import json
from importlib.resources import files

from mmusim.render.view import Recording

__all__ = ["render_html"]

_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


def render_html(rec: Recording) -> str:
    """The page for ``rec``: the same recording gives the same bytes."""
    template = files("mmusim.render").joinpath("view.html").read_text(encoding="utf-8")
    # Inside <script> the JSON must not contain "</script>" or "<!--": escape < > & as JSON does.
    data = json.dumps(rec.to_json(), separators=(",", ":"), ensure_ascii=False).translate(_ESCAPES)
    title = html.escape(f"mmusim view: {rec.meta['title']}")
    head, _, tail = template.partition("__DATA__")  # the title goes in the head, the data after
    return head.replace("__TITLE__", title, 1) + data + tail
