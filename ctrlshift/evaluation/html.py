"""``ctrlshift build RESULTS --html``: the leaderboard as a self-contained static page.

``OUT/leaderboard/index.html`` needs nothing else: no external script, style sheet or font, the
plots inlined as data URIs, so it works from ``file://`` and from any static host. One sortable
table per dataset and family (click a header to sort by it, again to reverse), links to every
result file and to the dataset's card.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from ..files import atomic_write_text
from ..names import slug
from .build import SUMMARY_KEYS, Entry

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; width: 100%; font-size: 0.92em; }
th, td { padding: 0.35em 0.6em; border-bottom: 1px solid #ddd; text-align: right; }
th { cursor: pointer; background: #f4f4f4; user-select: none; }
th.sorted-asc::after { content: " \\25B2"; } th.sorted-desc::after { content: " \\25BC"; }
td.text, th.text { text-align: left; }
img.plot { max-width: 100%; margin: 0.8em 0; }
p.note { color: #555; font-size: 0.9em; }
"""

SCRIPT = """
document.querySelectorAll("table.leaderboard").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var asc = !th.classList.contains("sorted-asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.value, y = b.cells[col].dataset.value;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

COLUMNS = [("rank", "num"), ("model", "text"), ("recipe", "text"), ("seeds", "num"), ("clean", "num"),
           ("at max", "num"), ("min", "num"), ("drop", "num"), ("nAUC", "num"), ("flip", "num"), ("verified", "text"),
           ("results", "text")]


def _cell(text: str, value: object, kind: str) -> str:
    cls = ' class="text"' if kind == "text" else ""
    return f'<td{cls} data-value="{html.escape(str(value), quote=True)}">{text}</td>'


def _pct(mean: float, std: float, seeds: int) -> str:
    if mean != mean:
        return "-"
    return f"{100 * mean:.1f}" + (f" &plusmn; {100 * std:.1f}" if seeds > 1 else "")


def _row(rank: int, e: Entry, page: Path) -> str:
    t = e.runs[0].training or {}
    corr = (e.runs[0].model or {}).get("correction")
    recipe = (f"zero-shot, {corr} correction" if corr else "zero-shot") if e.runs[0].task == "zero-shot" else \
        f"{t.get('augment', '-')}, n={t.get('train_size', '-')}" if t else "as is"
    links = " ".join(f'<a href="{html.escape(os.path.relpath(r.path, page.parent))}">s{r.seed}</a>'
                     for r in e.runs if getattr(r, "path", None))
    cells = [_cell(str(rank), rank, "num"), _cell(html.escape(e.label), e.label, "text"),
             _cell(html.escape(recipe), recipe, "text"), _cell(str(e.seeds), e.seeds, "num")]
    for key in SUMMARY_KEYS:
        mean, std = e.summary(key)
        cells.append(_cell(_pct(mean, std, e.seeds), mean if mean == mean else -1, "num"))
    flip = e.flip()
    cells.append(_cell(html.escape(flip), flip.lstrip(">") if flip != "-" else -1, "num"))
    cells.append(_cell("&#10003;" if e.verified else "", int(e.verified), "text"))
    cells.append(_cell(links, e.label, "text"))
    return "<tr>" + "".join(cells) + "</tr>"


def write_html(by_family: dict[tuple[str, str], list[Entry]], out: Path, plots: list[str]) -> str:
    """Write ``out/leaderboard/index.html``; returns its path."""
    page = out / "leaderboard" / "index.html"
    pngs = {Path(p).stem: Path(p) for p in plots if p.endswith(".png")}
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>ctrlshift leaderboard</title>", f"<style>{STYLE}</style></head><body>",
             "<h1>Leaderboard</h1>",
             '<p class="note">Accuracy (%) of models trained on each family\'s base value and tested at every '
             "intensity; mean &plusmn; std over seeds. nAUC: mean accuracy over the intensity range. Flip: median "
             "distance from the base value at which a correct prediction turns wrong (&gt;x: most never do). "
             "&#10003;: every seed re-verified by <code>ctrlshift verify</code>. Click a header to sort.</p>"]
    for (ds, fam), entries in sorted(by_family.items()):
        first = entries[0].runs[0]
        card = Path(first.dataset.path) / "README.md" if first.dataset.path else None
        card_link = f' &middot; <a href="{html.escape(os.path.relpath(card, page.parent))}">dataset card</a>' \
            if card is not None and card.is_file() else ""
        parts.append(f"<h2>{html.escape(ds)} / {html.escape(fam)} (axis: {html.escape(first.dataset.axis)})"
                     f"{card_link}</h2>")
        head = "".join(f'<th class="{"text" if k == "text" else "num"}">{name}</th>' for name, k in COLUMNS)
        rows = "\n".join(_row(k, e, page) for k, e in enumerate(entries, 1))
        parts.append(f'<table class="leaderboard" id="{html.escape(slug(f"{ds}-{fam}"))}"><thead><tr>{head}</tr>'
                     f"</thead><tbody>\n{rows}\n</tbody></table>")
        plot = pngs.get(slug(f"{ds}-{fam}"))
        if plot is not None and plot.is_file():
            data = base64.b64encode(plot.read_bytes()).decode()
            parts.append(f'<img class="plot" alt="accuracy against intensity: {html.escape(ds)} / {html.escape(fam)}" '
                         f'src="data:image/png;base64,{data}">')
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    atomic_write_text(page, "\n".join(parts) + "\n")
    return str(page)
