"""The report as HTML: a run's self-contained page (tables, comparisons, figures by relative link,
provenance) and ``reports/index.html``, the index of every run.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cutswap import atomic
from cutswap.report.compare import (
    ABLATION_NOTE,
    BLOCKS,
    display_table,
    interval_note,
    multiplicity_note,
    split_blocks,
)
from cutswap.report.prose import (
    comparison_settings,
    how_obtained,
    incomplete_note,
    operating_point_note,
    trunk_note,
)
from cutswap.report.tables import (
    REFERENCES,
    comparison,
    list_runs,
    metrics_of,
    operating_points,
    pair_steps,
    pivot,
)


@dataclass(frozen=True)
class FigureRef:
    """One picture of the run page: where it is, what it is called and the sentence that says how to read it.

    Attributes:
        path: relative to the run folder (``figures/<name>.png``), as the page links it.
        title: the heading above it.
        caption: how to read it (what the colours, lines and scales mean).
        section: the category it belongs to, or ``""`` for a run-level figure.
        row: figures of a section with the same non-empty ``row`` are laid out side by side.
    """

    path: str
    title: str
    caption: str = ""
    section: str = ""
    row: str = ""

    @property
    def ident(self) -> str:
        """The figure's element id: ``fig-`` and its file name without the extension."""
        return "fig-" + Path(self.path).stem


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}tr.mean{font-weight:bold;background:#f4f4f4}
img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}figcaption{font-size:13px;color:#555;
max-width:900px;text-align:left}.figrow{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}
.figrow figure{flex:0 1 auto}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}"""


def html_table(frame: pd.DataFrame, index_name: str = "category", table_id: str | None = None) -> str:
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [index_name, *frame.columns])
    rows = []
    for idx, row in frame.iterrows():
        cls = ' class="mean"' if idx == "mean" else ""
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in [idx, *row.tolist()])
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>{body}</body></html>"
    )


def _inline_md(text: str) -> str:
    """Bold and code spans of our own sentences, escaped first."""
    import re

    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _figure_html(fig: FigureRef) -> str:
    src = html.escape(fig.path)
    caption = f"<figcaption>{_inline_md(fig.caption)}</figcaption>" if fig.caption else ""
    return (
        f'<figure id="{html.escape(fig.ident)}"><h4>{html.escape(fig.title)}</h4>'
        f'<img src="{src}" alt="{html.escape(fig.title)}">{caption}</figure>'
    )


def figures_html(figures: Sequence[str | FigureRef], categories: Sequence[str] = ()) -> str:
    """The page's figures: the run-level ones first, then a section per category.

    A plain string is a figure path of the older form (``figures/<category>.png``), shown under its
    file name. Within a section, figures sharing a ``row`` sit side by side (the best method's examples
    beside the baseline's), so the page compares what a reader wants to compare without scrolling.
    """
    refs = [_figure_ref(f) for f in figures]
    if not refs:
        return ""
    sections = list(dict.fromkeys(["", *categories, *(f.section for f in refs)]))
    parts = ['<h2 id="figures">Figures</h2>']
    for section in sections:
        members = [f for f in refs if f.section == section]
        if members:
            parts.append(_section_html(section, members))
    return "".join(parts)


def _figure_ref(figure: str | FigureRef) -> FigureRef:
    """A figure as a ``FigureRef``; a plain path (the older form) is its own category's figure, titled by
    its file name."""
    if isinstance(figure, FigureRef):
        return figure
    return FigureRef(figure, Path(figure).stem, section=Path(figure).stem)


def _section_html(section: str, members: list[FigureRef]) -> str:
    """One section of figures (``""``: the run-level one), a row's figures side by side where it has
    several, at the place of its first figure."""
    name = section or "all categories"
    parts = [f'<section id="figures-{html.escape(section or "run")}"><h3>{html.escape(name)}</h3>']
    done: set[str] = set()
    for fig in members:
        if fig.row and fig.row in done:
            continue
        row = [f for f in members if fig.row and f.row == fig.row]
        if len(row) > 1:
            parts.append('<div class="figrow">' + "".join(map(_figure_html, row)) + "</div>")
            done.add(fig.row)
        else:
            parts.append(_figure_html(fig))
    parts.append("</section>")
    return "".join(parts)


def run_page(
    results: pd.DataFrame,
    provenance: dict,
    figures: Sequence[str | FigureRef],
    comparisons: pd.DataFrame | None = None,
) -> str:
    """One run as a self-contained HTML page (figures by relative link, ``figures_html``)."""
    parts = [
        f"<h1>cutswap report: {html.escape(provenance['run'])}</h1>",
        '<p><a href="../index.html">all runs</a></p>',
    ]
    incomplete = incomplete_note(provenance)
    if incomplete is not None:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in incomplete[1])
        parts.append(f'<div id="incomplete"><p>{_inline_md(incomplete[0])}</p><ul>{items}</ul></div>')
    parts.append(
        f"<p>Dataset <b>{html.escape(str(results['dataset'].iloc[0]))}</b>, {results['category'].nunique()} "
        "categories; values in %, mean ± std over seeds where there are several.</p>"
    )
    if comparisons is not None and not comparisons.empty:
        how = comparison_settings(provenance)
        level = (how.get("confidence", 0.95),)
        blocks = split_blocks(comparisons)
        parts.append("<h2>Comparisons</h2>")
        if "main" in blocks:
            parts.append(html_table(display_table(blocks["main"], *level), "question", "comparisons"))
        confirmatory = how.pop("confirmatory", ())
        parts.append(f"<p>{_inline_md(interval_note(**how))}</p>")
        multiplicity = multiplicity_note(comparisons, *level, confirmatory)
        if multiplicity:
            parts.append(f"<p>{_inline_md(multiplicity)}</p>")
        if "ablation" in blocks:
            parts += [
                f"<h3>{BLOCKS['ablation']}</h3>",
                f"<p>{html.escape(ABLATION_NOTE)}</p>",
                html_table(display_table(blocks["ablation"], *level), "question", "ablations"),
            ]
    for metric in metrics_of(results):
        parts += [
            f"<h2>{metric}</h2>",
            html_table(pivot(results, metric), table_id=f"table-{metric}"),
            f"<p>{html.escape(trunk_note(results))}</p>",
        ]
    for column in operating_points(results):
        parts += [f"<h2>{column}</h2>", html_table(pivot(results, column), table_id=f"table-{column}")]
    if operating_points(results):
        parts.append(f"<p>{html.escape(operating_point_note(results))}</p>")
    ref = comparison(results)
    if ref is not None:
        parts += [
            f"<h2>image_AUROC beside {html.escape(REFERENCES[results['dataset'].iloc[0]].title)}</h2>",
            html_table(ref, table_id="reference"),
        ]
    steps = pair_steps(results)
    if steps is not None:
        parts += [
            "<h2>Pair-bank draws by step (% of draws)</h2>",
            html_table(steps, "category / level", table_id="pair-steps"),
        ]
    parts += ["<h2>How these numbers were obtained</h2><ul>"]
    parts += [f"<li>{_inline_md(line)}</li>" for line in how_obtained(results, provenance)]
    parts += ['</ul><p>Per-seed values: <a href="results.csv">results.csv</a>.</p>']
    parts.append(figures_html(figures, sorted(results["category"].unique())))
    prov = {
        k: provenance[k] for k in ("settings", "backbone", "versions", "created", "preset") if k in provenance
    }
    parts.append(f"<h2>Provenance</h2><pre>{html.escape(json.dumps(prov, indent=2, default=str))}</pre>")
    return _page(f"cutswap: {provenance['run']}", "".join(parts))


def write_index(reports_root: Path) -> Path:
    """(Re)write ``reports/index.html`` from the runs on disk."""
    runs = list_runs(reports_root)
    if runs.empty:
        body = "<h1>cutswap reports</h1><p>No runs yet.</p>"
    else:
        linked = runs.copy()
        table = html_table(linked.set_index("run"), index_name="run", table_id="runs")
        for name in runs["run"]:
            esc = html.escape(name)
            table = table.replace(f"<td>{esc}</td>", f'<td><a href="{esc}/index.html">{esc}</a></td>', 1)
        body = f"<h1>cutswap reports</h1>{table}"
    path = Path(reports_root) / "index.html"
    atomic.write_text(path, _page("cutswap reports", body))
    return path
