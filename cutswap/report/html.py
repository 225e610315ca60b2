"""The report as HTML: a run's self-contained page (answers, tables, figures by relative link, provenance);
the runs index and the comparison pages are ``cutswap.report.runs_page``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cutswap.report.answers import answers_html, grid_html
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
    metrics_of,
    operating_points,
    pair_steps,
    pivot,
    trained_seeds,
)

#: The section of the run page's answers: a figure of it is shown beside them, not among the figures.
ANSWERS = "answers"


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


#: Width of the figure beside the answers, in CSS pixels (the page's first screen at 1280 x 800 holds both).
ANSWERS_WIDTH = 480
_CSS = f"""body{{font-family:system-ui,sans-serif;margin:0;color:#222}}
#toc{{position:fixed;top:0;left:0;bottom:0;width:150px;overflow:auto;padding:12px;background:#f7f7f7;
border-right:1px solid #ddd;font-size:13px}}#toc a{{display:block;color:#1a4d8f;text-decoration:none;
padding:2px 0}}#toc hr{{border:0;border-top:1px solid #ddd}}
main{{margin-left:175px;padding:0 24px 24px;max-width:1400px}}header h1{{margin:12px 0 2px;font-size:24px}}
.meta{{margin:0 0 8px;color:#555;font-size:13px}}h2{{font-size:19px}}#answers h2{{margin:8px 0}}
.answers-row{{display:flex;gap:20px;align-items:flex-start}}.answers{{flex:1 1 0;min-width:0;margin:0;
padding-left:1.2em;font-size:13px;line-height:1.3}}.answers li{{margin:0 0 5px}}
.answers .q{{display:block;color:#555;font-size:12px}}.badge{{display:inline-block;padding:0 6px;
border-radius:3px;font-weight:600;font-size:13px}}.flag{{color:#a05a00;font-size:12px;white-space:nowrap}}
.a-better{{background:#d6efd6}}.b-better{{background:#f6d6d6}}.equivalent{{background:#d9e6f7}}
.inconclusive{{background:#eee}}.not-answered{{background:#fff;outline:1px dashed #aaa}}
#fig-answers{{flex:0 0 {ANSWERS_WIDTH}px;margin:0}}#fig-answers img{{width:{ANSWERS_WIDTH}px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}
th:first-child,td:first-child{{text-align:left}}tr.mean{{font-weight:bold;background:#f4f4f4}}
table.grid td{{white-space:nowrap;font-size:13px;padding:3px 8px}}.legend{{font-size:12px;color:#555}}
details{{margin:8px 0}}summary{{cursor:pointer}}summary h2{{display:inline}}
img{{max-width:100%;border:1px solid #ddd}}figure{{margin:1em 0}}figcaption{{font-size:13px;color:#555;
max-width:900px;text-align:left}}.figrow{{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}}
.figrow figure{{flex:0 1 auto}}.index{{padding:12px 24px}}#runs td{{text-align:left;font-size:13px}}
#runs th{{cursor:pointer;text-align:left}}
pre{{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}}"""


def html_table(frame: pd.DataFrame, index_name: str = "category", table_id: str | None = None) -> str:
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [index_name, *frame.columns])
    rows = []
    for idx, row in frame.iterrows():
        cls = ' class="mean"' if idx == "mean" else ""
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in [idx, *row.tolist()])
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def page(title: str, body: str) -> str:
    """A complete HTML document with the report's style."""
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


Section = tuple[list[str], list[tuple[str, str]]]
"""A part of the run page: its HTML pieces and its entries of the side navigation (id, text)."""


def _answers_figure(figures: Sequence[FigureRef]) -> str:
    """The figure shown beside the answers (section :data:`ANSWERS`), with its size given so the page lays
    out before the image loads; "" when the run has none."""
    for fig in figures:
        if fig.section == ANSWERS:
            return (
                f'<figure id="{html.escape(fig.ident)}"><img src="{html.escape(fig.path)}" '
                f'alt="{html.escape(fig.title)}" width="{ANSWERS_WIDTH}"><figcaption>'
                f"{_inline_md(fig.caption)}</figcaption></figure>"
            )
    return ""


def _toc(entries: Sequence[tuple[str, str]]) -> str:
    links = "".join(f'<a href="#{html.escape(ident)}">{html.escape(text)}</a>' for ident, text in entries)
    return f'<nav id="toc"><a href="../index.html"><b>all runs</b></a><hr>{links}</nav>'


def _answers(comparisons: pd.DataFrame, provenance: dict, figures: Sequence[FigureRef]) -> Section:
    """The answers, then each block's questions x metrics grid with the notes and every row folded."""
    how = comparison_settings(provenance)
    level = how.get("confidence", 0.95)
    confirmatory = how.pop("confirmatory", ())
    blocks = split_blocks(comparisons)
    parts = [
        '<section id="answers"><h2>Answers</h2>',
        answers_html(comparisons, _answers_figure(figures), level),
    ]
    toc = [("answers", "Answers")]
    multiplicity = multiplicity_note(comparisons, level, confirmatory)
    parts += [f"<p>{_inline_md(multiplicity)}</p>" if multiplicity else "", "</section>"]
    if "main" in blocks:
        parts += [
            '<section id="questions"><h2>Every question and metric</h2>',
            grid_html(blocks["main"], "questions-grid", level),
            f"<details><summary>How the intervals and answers were computed</summary><p>"
            f"{_inline_md(interval_note(**how))}</p></details>",
            "<details><summary>Every row with its verdict</summary>",
            html_table(display_table(blocks["main"], level), "question", "comparisons"),
            "</details></section>",
        ]
        toc.append(("questions", "Every question"))
    if "ablation" in blocks:
        parts += [
            f'<section id="ablations-section"><h2>{BLOCKS["ablation"]}</h2>',
            f"<p>{html.escape(ABLATION_NOTE)}</p>",
            grid_html(blocks["ablation"], "ablations-grid", level),
            "<details><summary>Every row with its verdict</summary>",
            html_table(display_table(blocks["ablation"], level), "question", "ablations"),
            "</details></section>",
        ]
        toc.append(("ablations-section", BLOCKS["ablation"]))
    return parts, toc


def _header(results: pd.DataFrame, provenance: dict) -> Section:
    """The run in one line, and the failed jobs of an incomplete run."""
    meta = (
        f"Dataset <b>{html.escape(str(results['dataset'].iloc[0]))}</b>, {results['category'].nunique()} "
        f"categories, {trained_seeds(results)} seeds, methods "
        f"{html.escape(', '.join(dict.fromkeys(results['method'])))}; "
        f"{html.escape(str(provenance.get('created', ''))[:16].replace('T', ' '))}. Values in %, mean ± std "
        "over seeds where there are several."
    )
    parts = [f'<header><h1>{html.escape(provenance["run"])}</h1><p class="meta">{meta}</p></header>']
    incomplete = incomplete_note(provenance)
    if incomplete is None:
        return parts, []
    items = "".join(f"<li>{html.escape(line)}</li>" for line in incomplete[1])
    parts.append(f'<div id="incomplete"><p>{_inline_md(incomplete[0])}</p><ul>{items}</ul></div>')
    return parts, [("incomplete", "Incomplete run")]


def _tables(results: pd.DataFrame) -> Section:
    """Per metric and operating point its table; the published figures; the pair-bank draws."""
    parts, toc = [], []
    for metric in metrics_of(results):
        parts += [
            f'<h2 id="{metric}">{metric}</h2>',
            html_table(pivot(results, metric), table_id=f"table-{metric}"),
            f"<p>{html.escape(trunk_note(results))}</p>",
        ]
        toc.append((metric, metric))
    for column in operating_points(results):
        parts += [f"<h2>{column}</h2>", html_table(pivot(results, column), table_id=f"table-{column}")]
    if operating_points(results):
        parts.append(f"<p>{html.escape(operating_point_note(results))}</p>")
    ref, dataset = comparison(results), results["dataset"].iloc[0]
    if ref is not None:
        title = html.escape(REFERENCES[dataset].title)
        parts += [
            f'<h2 id="published">image_AUROC beside {title}</h2>',
            html_table(ref, table_id="reference"),
        ]
        toc.append(("published", "Published figures"))
    steps = pair_steps(results)
    if steps is not None:
        parts += [
            '<h2 id="steps">Pair-bank draws by step (% of draws)</h2>',
            html_table(steps, "category / level", table_id="pair-steps"),
        ]
        toc.append(("steps", "Pair-bank draws"))
    return parts, toc


def _figures(refs: list[FigureRef], categories: list[str]) -> Section:
    shown = [f for f in refs if f.section != ANSWERS]
    if not shown:
        return [], []
    toc = [("figures", "Figures")]
    toc += [(f"figures-{c}", f"· {c}") for c in categories if any(f.section == c for f in shown)]
    return [figures_html(shown, categories)], toc


def _folded(results: pd.DataFrame, provenance: dict) -> Section:
    """How the numbers were obtained, and the provenance, folded away."""
    parts = ['<details id="method"><summary><h2>How these numbers were obtained</h2></summary><ul>']
    parts += [f"<li>{_inline_md(line)}</li>" for line in how_obtained(results, provenance)]
    parts += ['</ul><p>Per-seed values: <a href="results.csv">results.csv</a>.</p></details>']
    prov = {
        k: provenance[k] for k in ("settings", "backbone", "versions", "created", "preset") if k in provenance
    }
    parts.append(
        '<details id="provenance"><summary><h2>Provenance</h2></summary>'
        f"<pre>{html.escape(json.dumps(prov, indent=2, default=str))}</pre></details>"
    )
    return parts, [("method", "How obtained"), ("provenance", "Provenance")]


def run_page(
    results: pd.DataFrame,
    provenance: dict,
    figures: Sequence[str | FigureRef],
    comparisons: pd.DataFrame | None = None,
) -> str:
    """One run as a self-contained HTML page (figures by relative link, ``figures_html``), answers first.

    At the top, within one screen: the run in one line and each question answered in one line beside the
    figure of those answers (``cutswap.report.answers``); then every question x metric as a grid, the
    tables, the figures per category, and the method text and provenance folded away. A side navigation
    links the sections. Nothing is fetched: the page works from ``file://`` and any static server.
    """
    refs = [_figure_ref(f) for f in figures]
    sections = [_header(results, provenance)]
    if comparisons is not None and not comparisons.empty:
        sections.append(_answers(comparisons, provenance, refs))
    sections += [
        _tables(results),
        _figures(refs, sorted(results["category"].unique())),
        _folded(results, provenance),
    ]
    parts = [piece for section, _ in sections for piece in section]
    body = _toc([entry for _, toc in sections for entry in toc]) + "<main>" + "".join(parts) + "</main>"
    return page(f"cutswap: {provenance['run']}", body)
