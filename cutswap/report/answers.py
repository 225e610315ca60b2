"""The top of a run's page: each question answered in one line, and the questions x metrics grid.

Input: the run's comparisons (``comparisons.csv``, :data:`cutswap.report.compare.COLUMNS`; tables of report
versions before 10 lack ``answer``, ``role`` and the scope columns, and read from their intervals alone)::

    block  question                        role          a        b            metric       ...  answer
    main   Does saliency guidance help...  confirmatory  cutswap  random-swap  image_AUROC  ...  inconclusive

Output: HTML fragments for ``cutswap.report.html.run_page``:

* :func:`answers_html`: one line per question of the main block on its main metric
  (:func:`cutswap.report.compare.headline`): the answer, a − b with its interval, its scope and role, a
  flag mark where its coverage is not promised (the full verdict as the line's tooltip); beside it the
  figure of those rows (``figures/answers.png``).
* :func:`grid_html`: a block's questions as rows and its metrics as columns, each cell the difference
  and interval coloured by its answer, the verdict as the cell's tooltip: what repeated the question's
  text once per metric in the table it replaces.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from cutswap.report.compare import (
    A_BETTER,
    B_BETTER,
    EQUIVALENT,
    INCONCLUSIVE,
    NOT_ANSWERED,
    answer,
    answer_words,
    headline,
    points,
    role_words,
)

#: The CSS class of each answer (the colours are ``cutswap.report.html``'s).
ANSWER_CLASS = {
    A_BETTER: "a-better",
    B_BETTER: "b-better",
    EQUIVALENT: "equivalent",
    INCONCLUSIVE: "inconclusive",
    NOT_ANSWERED: "not-answered",
}


def row_answer(r: pd.Series) -> str:
    """The row's answer; for a table of an earlier report version, read from its interval alone."""
    said = r.get("answer")
    if isinstance(said, str) and said in ANSWER_CLASS:
        return said
    return answer(float(r["ci_low"]), float(r["ci_high"]), margin=1e-12)


def row_words(r: pd.Series) -> str:
    """The row's answer with the better method named: ``cutswap better``, ``inconclusive``, ..."""
    return answer_words(row_answer(r), str(r["a"]), str(r["b"]))


def _span(r: pd.Series) -> str:
    if not np.isfinite(float(r["ci_low"])):
        return f"{points(float(r['mean_diff']))} (no interval)"
    return f"{points(float(r['mean_diff']))} [{points(float(r['ci_low']))}, {points(float(r['ci_high']))}]"


def _power(r: pd.Series) -> str:
    """For an inconclusive answer, what the design would have detected (an estimate)."""
    detectable = float(r.get("detectable", float("nan")))
    if row_answer(r) != INCONCLUSIVE or not np.isfinite(detectable):
        return ""
    return f" (would detect ±{detectable * 100:.1f}, an estimate)"


def _scope(r: pd.Series) -> str:
    """These categories, and what the row says of categories like these where it says anything."""
    n = r.get("categories")
    if n is None or not np.isfinite(float(n)):
        return ""
    these = "this category" if int(n) == 1 else f"these {int(n)} categories"
    like = r.get("like_these_answer")
    if isinstance(like, str) and like != "n/a":
        return f"on {these}; on categories like these: {answer_words(like, str(r['a']), str(r['b']))}"
    return f"on {these} only"


def _holm(r: pd.Series, alpha: float) -> str:
    """A mark on a "better" that does not survive its family's Holm adjustment."""
    p_adj = float(r.get("p_adjusted", float("nan")))
    if row_answer(r) in (A_BETTER, B_BETTER) and np.isfinite(p_adj) and p_adj >= alpha:
        return ' <span class="flag">✗ not significant after Holm</span>'
    return ""


def _flag(r: pd.Series) -> str:
    concern = r.get("flag")
    if not isinstance(concern, str) or not concern:
        return ""
    return f' <span class="flag" title="coverage not promised: {html.escape(concern)}">⚑ not promised</span>'


def answers_html(comparisons: pd.DataFrame, figure: str = "", confidence: float = 0.95) -> str:
    """The run's answers, one line per question (module docstring), with ``figure`` (an HTML fragment)
    beside them; "" without a question in the main block."""
    rows = headline(comparisons)
    if rows.empty:
        return ""
    items = []
    for _, r in rows.iterrows():
        said, marks = row_answer(r), _holm(r, 1 - confidence) + _flag(r)
        head = " · ".join(
            x
            for x in (
                html.escape(str(r["question"])),
                html.escape(role_words(r.get("role"), float(r.get("p_adjusted", float("nan"))))),
            )
            if x
        )
        items.append(
            f'<li title="{html.escape(str(r["verdict"]))}"><span class="q">{head}</span>'
            f'<span class="badge {ANSWER_CLASS[said]}">{html.escape(row_words(r))}</span> '
            f"{html.escape(str(r['a']))} − {html.escape(str(r['b']))} <b>{_span(r)}</b>{_power(r)} "
            f"{html.escape(str(r['metric']))}, {html.escape(_scope(r))}{marks}</li>"
        )
    return f'<div class="answers-row"><ol class="answers">{"".join(items)}</ol>{figure}</div>'


#: What the grid's marks mean, under it.
GRID_LEGEND = (
    "Each cell: a − b in points with its interval on these categories, coloured by its answer (green: a "
    "better, red: b better, blue: practically equivalent, grey: inconclusive); ⚑: coverage not promised; "
    "✗: a difference that does not survive Holm's adjustment. Hover a cell for its verdict, a row for its "
    "question."
)


def grid_html(block: pd.DataFrame, table_id: str, confidence: float = 0.95) -> str:
    """A block's questions x metrics grid (module docstring), compact: marks as symbols, the question and
    the verdicts as tooltips."""
    alpha = 1 - confidence
    metrics = list(dict.fromkeys(block["metric"]))
    head = "".join(f"<th>{html.escape(m)}</th>" for m in ["a − b", *metrics])
    body = []
    for (a, b), rows in block.groupby(["a", "b"], sort=False):
        first = rows.iloc[0]
        role = first.get("role") if isinstance(first.get("role"), str) else ""
        by_metric = {r["metric"]: r for _, r in rows.iterrows()}
        cells = []
        for metric in metrics:
            r = by_metric.get(metric)
            if r is None:
                cells.append("<td></td>")
                continue
            marks = ("⚑" if _flag(r) else "") + ("✗" if _holm(r, alpha) else "")
            cells.append(
                f'<td class="{ANSWER_CLASS[row_answer(r)]}" title="{html.escape(str(r["verdict"]))}">'
                f"{_span(r)}{f' <span class=flag>{marks}</span>' if marks else ''}</td>"
            )
        label = html.escape(f"{a} − {b}") + (f" <i>{html.escape(role)}</i>" if role else "")
        title = html.escape(str(first["question"]))
        body.append(f'<tr><td title="{title}">{label}</td>{"".join(cells)}</tr>')
    table = f'<table id="{table_id}" class="grid"><thead><tr>{head}</tr></thead>'
    return f'{table}<tbody>{"".join(body)}</tbody></table><p class="legend">{html.escape(GRID_LEGEND)}</p>'
