"""Prefect task of the report stage: files under ``reports/<run>/`` plus Prefect artifacts."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from cutswap import roots
from cutswap.pipeline.results import CategoryRefs
from cutswap.pipeline.settings import Settings
from cutswap.pipeline.stages.report import write_report
from cutswap.report.compare import comparisons_markdown
from cutswap.report.prose import comparison_settings
from tasks._logging import run_logged


def _artifact_key(run: str, what: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in run.lower()).strip("-")
    return f"cutswap-{slug}-{what}"


def _link(settings: Settings, folder: Path, name: str) -> str:
    """What an artifact links for a file of the report: under a URL reports_root the object's https
    address (``cutswap.roots.browser_url``: the Prefect UI is a web page, and a browser opens neither
    ``s3://`` nor this host's ``file://`` paths from another machine), else the file on this host."""
    if roots.is_local(settings.reports_root):
        return (folder / name).resolve().as_uri()
    return roots.browser_url(roots.join(roots.normalize(settings.reports_root), settings.run, name))


def _shown(settings: Settings, folder: Path) -> Callable[[str], str]:
    """Where a file of the report is, as the artifacts' descriptions name it: the bucket's URL under a URL
    reports_root, else the file on this host."""
    if roots.is_local(settings.reports_root):
        return lambda name: str(folder / name)
    return lambda name: roots.join(roots.normalize(settings.reports_root), settings.run, name)


@task(name="report", cache_policy=NONE)
def report(
    settings: Settings,
    categories: dict[str, CategoryRefs],
    mode: str = "run",
    preset: str | None = None,
    failed: list[dict[str, Any]] | None = None,
) -> Path:
    """``failed``: the jobs that failed; the report of the others says it is incomplete and lists them."""
    folder = run_logged(
        "report", settings.run, partial(write_report, settings, categories, mode, preset, failed)
    )
    results = pd.read_csv(Path(folder) / "results.csv")
    shown = _shown(settings, Path(folder))
    create_table_artifact(
        table=results.astype(object).where(results.notna(), None).to_dict(orient="records"),
        key=_artifact_key(settings.run, "results"),
        description=f"Per-seed results of run {settings.run} ({shown('results.csv')})",
    )
    create_markdown_artifact(
        markdown=(Path(folder) / "summary.md").read_text(),
        key=_artifact_key(settings.run, "summary"),
        description=f"Summary of run {settings.run}",
    )
    if (Path(folder) / "comparisons.csv").is_file():
        comparisons = pd.read_csv(Path(folder) / "comparisons.csv")
        provenance = json.loads((Path(folder) / "provenance.json").read_text())
        create_markdown_artifact(
            markdown=f"# Comparisons: {settings.run}\n\n"
            + comparisons_markdown(comparisons, **comparison_settings(provenance)),
            key=_artifact_key(settings.run, "comparisons"),
            description=f"Paired comparisons of run {settings.run} ({shown('comparisons.csv')})",
        )
    # The pictures as links, not inline images: base64 PNGs would make artifacts of megabytes.
    pictures = sorted((Path(folder) / "figures").glob("*.png"))
    if pictures:
        create_markdown_artifact(
            markdown=f"# Figures: {settings.run}\n\n"
            + "\n".join(
                f"- [{p.stem}]({_link(settings, Path(folder), f'figures/{p.name}')})" for p in pictures
            ),
            key=_artifact_key(settings.run, "figures"),
            description=f"Figures of run {settings.run} ({shown('figures')}; shown in index.html)",
        )
    if roots.is_local(settings.reports_root):
        text = f"{settings.run} report (HTML)"
    else:  # where someone on another host finds it; this host's copy is in the text
        page = roots.join(roots.normalize(settings.reports_root), settings.run, "index.html")
        text = f"{settings.run} report (HTML, in the bucket: {page}; built on this host in {folder})"
    link = _link(settings, Path(folder), "index.html")
    create_link_artifact(link=link, link_text=text, key=_artifact_key(settings.run, "page"))
    return Path(folder)
