"""The one HTML page helper: a self-contained page (plotly.js inline, no CDN) in the reports' style.

`report`, `ablate`, `plot` and the analysis page all write their pages through `page`, so they look
alike and open offline.
"""

from __future__ import annotations

import html

import plotly.graph_objects as go

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}.knee{background:#fff3c4}.warn{color:#8a5300}.note{color:#666;font-style:italic}
.missing{color:#a33;font-weight:bold}section{margin-bottom:2.5em}"""


def page(title: str, body: str) -> str:
    """A self-contained HTML page: plotly.js inline, the shared style, `body` as given."""
    from plotly.offline import get_plotlyjs

    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style>"
            f"<script>{get_plotlyjs()}</script></head><body>{body}</body></html>")


def figure_div(figs: dict[str, go.Figure], div_id: str) -> str:
    """A figure as a div without plotly.js (the page carries it once), or "" when there is none."""
    if div_id not in figs:
        return ""
    return str(figs[div_id].to_html(full_html=False, include_plotlyjs=False, div_id=div_id))
