"""The runs index, ``reports/index.html``, and the pages that set two runs side by side.

Layout under a reports root::

    index.html                 every run: date, dataset, methods, seeds, status, answers; sortable and
                               filterable; pick two runs and open their comparison
    compare/<A>+<B>.html       what ``cutswap compare A B`` prints (cutswap.report.agreement), for every two
                               runs on one dataset that answered a common question
    <run>/index.html           a run's page (cutswap.report.html)

Everything is written with the index, and the index carries the list of comparison pages in the page
itself: opened from ``file://``, a browser fetches nothing (Chromium refuses ``fetch`` there), so the
pages work from a folder, an archive or any static server. Two runs on different datasets share question
names but not their meaning, so they get no comparison page.
"""

from __future__ import annotations

import html
import json
import urllib.parse
from itertools import combinations
from pathlib import Path

import pandas as pd

from cutswap import atomic
from cutswap.report.agreement import ONE_SIDED, OPPOSITE, SAME, agreement
from cutswap.report.html import html_table, page
from cutswap.report.tables import list_runs

#: The folder of the comparison pages, under the reports root.
COMPARE = "compare"

#: Sorting, filtering and picking two runs: no network, no library.
_SCRIPT = """<script>
const table = document.getElementById("runs"), body = table.tBodies[0];
const pages = JSON.parse(document.getElementById("pairs").textContent);
document.getElementById("filter").addEventListener("input", e => {
  const words = e.target.value.toLowerCase().split(/\\s+/).filter(Boolean);
  for (const row of body.rows) {
    const text = row.textContent.toLowerCase();
    row.hidden = !words.every(w => text.includes(w));
  }
});
[...table.tHead.rows[0].cells].forEach((th, i) => th.addEventListener("click", () => {
  const up = th.dataset.order !== "up"; th.dataset.order = up ? "up" : "down";
  const key = r => r.cells[i].textContent.trim();
  const number = t => (t !== "" && isFinite(t) ? Number(t) : NaN);  // "2026-12-06 10:00" is text
  const rows = [...body.rows].sort((a, b) => {
    const x = key(a), y = key(b), nx = number(x), ny = number(y);
    const c = !isNaN(nx) && !isNaN(ny) ? nx - ny : x.localeCompare(y);
    return up ? c : -c;
  });
  rows.forEach(r => body.appendChild(r));
}));
document.getElementById("compare").addEventListener("click", () => {
  const picked = [...body.rows].filter(r => !r.hidden && r.cells[0].firstChild.checked)
    .map(r => r.cells[0].firstChild.value);
  const note = document.getElementById("compare-note");
  if (picked.length !== 2) { note.textContent = "Pick exactly two runs."; return; }
  const href = pages[picked.join("\\n")] ?? pages[[...picked].reverse().join("\\n")];
  if (href) { window.location.href = href; return; }
  note.textContent = `${picked[0]} and ${picked[1]} answered no common question on one dataset.`;
});
</script>"""


def comparison_name(first: str, second: str) -> str:
    """The comparison page of two runs, relative to the reports root (names in sorted order, joined by
    ``+``, which a run name cannot hold)."""
    a, b = sorted((first, second))
    return f"{COMPARE}/{a}+{b}.html"


def _comparisons(root: Path, runs: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Every two ok runs of one dataset with a common question: their agreement table."""
    tables = {}
    for run in runs[runs["status"].astype(str).str.startswith(("ok", "incomplete"))]["run"]:
        path = root / run / "comparisons.csv"
        try:
            tables[run] = pd.read_csv(path)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            continue  # listed in the index (its answers say it is unreadable), set beside nothing
    dataset = dict(zip(runs["run"], runs.get("dataset", pd.Series(dtype=str)), strict=False))
    out = {}
    for a, b in combinations(sorted(tables), 2):
        if dataset.get(a) != dataset.get(b):
            continue
        try:
            out[(a, b)] = agreement(tables[a], tables[b])
        except (ValueError, TypeError, KeyError):  # no common question, or a table of another shape
            continue
    return out


def _comparison_page(a: str, b: str, table: pd.DataFrame) -> str:
    counts = table["agreement"].value_counts()
    said = ", ".join(f"{int(counts.get(k, 0))} {k}" for k in (OPPOSITE, ONE_SIDED, SAME))
    body = (
        f'<div class="index"><p><a href="../index.html">all runs</a></p>'
        f"<h1>{html.escape(a)} beside {html.escape(b)}</h1>"
        f'<p>A = <a href="../{html.escape(a)}/index.html">{html.escape(a)}</a>, B = '
        f'<a href="../{html.escape(b)}/index.html">{html.escape(b)}</a>: differences a − b in points with '
        f"their intervals, for every question both answered. Of {len(table)} answers: {said}. "
        f"<b>{OPPOSITE}</b>: one run finds a better and the other b better (what a rerun must never show); "
        f"<b>{ONE_SIDED}</b>: only one run's interval clears zero. The same table: "
        f"<code>cutswap compare {html.escape(a)} {html.escape(b)}</code>.</p>"
        + html_table(table.set_index("question"), "question", "agreement")
        + "</div>"
    )
    return page(f"cutswap: {a} beside {b}", body)


def write_index(reports_root: Path) -> Path:
    """(Re)write ``reports/index.html`` and the comparison pages from the runs on disk (module docstring);
    comparison pages of runs no longer there are removed."""
    root = Path(reports_root)
    runs = list_runs(root)
    pairs: dict[str, str] = {}
    folder = root / COMPARE
    written: set[Path] = set()
    if runs.empty:
        body = '<div class="index"><h1>cutswap reports</h1><p>No runs yet.</p></div>'
    else:
        for (a, b), table in _comparisons(root, runs).items():
            name = comparison_name(a, b)
            atomic.write_text(root / name, _comparison_page(a, b, table))
            written.add(root / name)
            pairs[f"{a}\n{b}"] = name
        body = _index_body(runs, pairs)
    if folder.is_dir():
        for stale in folder.glob("*.html"):
            if stale not in written:
                stale.unlink()
    path = root / "index.html"
    atomic.write_text(path, page("cutswap reports", body))
    return path


def _index_body(runs: pd.DataFrame, pairs: dict[str, str]) -> str:
    columns = [c for c in runs.columns if c != "run"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["", "run", *columns])
    rows = []
    for _, r in runs.iterrows():
        name = html.escape(str(r["run"]))
        link = html.escape(urllib.parse.quote(str(r["run"])))
        cells = "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in columns)
        rows.append(
            f'<tr><td><input type="checkbox" value="{name}" aria-label="pick {name}"></td>'
            f'<td><a href="{link}/index.html">{name}</a></td>{cells}</tr>'
        )
    data = json.dumps(pairs).replace("<", "\\u003c")
    return (
        '<div class="index"><h1>cutswap reports</h1>'
        '<p><input id="filter" type="search" placeholder="filter: words every row shown must contain" '
        'size="50"> <button id="compare" type="button">compare the two picked runs</button> '
        '<span id="compare-note"></span></p>'
        '<p class="legend">Click a column\'s title to sort by it. Two runs of one dataset that answered a '
        "common question open side by side (their answers, intervals and agreement).</p>"
        f'<table id="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        f'<script type="application/json" id="pairs">{data}</script>{_SCRIPT}</div>'
    )
