"""The report pages as a person sees them: rendered by headless Chromium (Debian's `chromium`).

The run page carries real figures (``cutswap.report.figures`` on synthetic scores, maps and logs) and a
comparisons table, and a test checks in the browser that every image decodes. Set
``CUTSWAP_REPORT_SHOT=/tmp/report-shot.png`` to keep the page's screenshot (and ``...-figure.png``, one
figure) for a person to look at.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cutswap.report import figures as plots
from cutswap.report.compare import compare
from cutswap.report.html import FigureRef, run_page
from cutswap.report.runs_page import write_index

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (make test installs it as root)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium(tmp_path, *args: str) -> str:
    profile = Path(tmp_path) / "chromium-profile"
    out = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture
def reports(tmp_path):
    results = pd.DataFrame(
        [
            {"dataset": "mvtec", "category": "bottle", "method": m, "seed": s, "image_AUROC": v,
             "pretrained": False, "head_dims": "512-128", "steps": 10, "batch_size": 4, "image_size": 64,
             "lr": 0.03, "levels": "level1", "cluster_method": "fcm", "cluster_k": 3, "draws": 8,
             "pair_fallback_rate": 0.0, "momentum": 0.9, "weight_decay": 3e-5, "trunk": "resnet18"}
            for m, s, v in (("cutswap", 0, 0.97), ("cutswap", 1, 0.99),
                            ("cutpaste", 0, 0.91), ("cutpaste", 1, 0.93))
        ]
    )  # fmt: skip
    run = tmp_path / "reports" / "r1"
    (run / "figures").mkdir(parents=True)
    results.to_csv(run / "results.csv", index=False)
    comparisons = compare(results, [("cutswap", "cutpaste")], ["image_AUROC"])
    prov = {
        "run": "r1", "created": "2026-01-01T00:00:00", "settings": {}, "backbone": {"name": "resnet18"},
        "comparisons": {"n_boot": 200, "confidence": 0.95, "tie": 0.001, "seed": 0},
    }  # fmt: skip
    (run / "provenance.json").write_text(json.dumps(prov))
    figs = _figures(run)
    (run / "index.html").write_text(run_page(results, prov, figs, comparisons))
    write_index(tmp_path / "reports")
    return tmp_path / "reports"


def _figures(run: Path) -> list[FigureRef]:
    """Every kind of report figure, drawn from synthetic data into ``run/figures/``."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(60), np.ones(40)].astype(int)
    runs = {
        m: [(rng.normal(labels * d, 1.0), labels) for _ in range(2)]
        for m, d in (("cutswap", 2.5), ("cutpaste", 1.5))
    }
    size = 64
    yy, xx = np.mgrid[:size, :size]
    examples = []
    for p in plots.extremes(*runs["cutswap"][0]):
        image = np.stack([(xx * 3 + p.position) % 255, yy * 3 % 255, np.full((size, size), 120)], -1).astype(
            np.uint8
        )
        mask = ((xx - 32) ** 2 + (yy - 28) ** 2 < 60) & bool(p.label)
        amap = np.clip(0.2 * rng.random((size, size)) + 0.8 * mask, 0, 1)
        examples.append(plots.Example(image, amap, mask, f"{p.description}\nscore {p.score:.3g}"))
    columns = ["step", "loss", "acc_negative", "acc_normal", "lr", "images_per_s"]
    steps = np.arange(0, 61, 10.0)
    logs = {
        m: [np.c_[steps, k * np.exp(-steps / (20 + s)), 1 - np.exp(-steps / (15 + s) / k), np.ones(7),
                  np.full(7, 0.03), np.full(7, 40.0)] for s in (0, 5)]
        for m, k in (("cutswap", 1.0), ("cutpaste", 1.4))
    }  # fmt: skip
    out = run / "figures"
    plots.examples_figure(out / "bottle-examples-cutswap.png", examples, "bottle: cutswap, seed 0", 1.0, 0.5)
    plots.examples_figure(out / "bottle-examples-imagenet-gde.png", examples, "bottle: imagenet-gde", 1.0)
    plots.score_histograms(
        out / "bottle-scores.png", {m: r[0] for m, r in runs.items()}, "bottle", {"cutswap": 1.2}
    )
    plots.roc_figure(out / "bottle-roc.png", runs, "bottle: image-level ROC")
    plots.training_figure(out / "bottle-training.png", logs, columns, "bottle: training")
    comparisons = pd.DataFrame(
        [("cutswap", "cutpaste", "image_AUROC", 2, 0.06, 0.05, 0.07, 2, 0, 0, "cutswap better"),
         ("cutswap", "imagenet-gde", "image_AUROC", 2, -0.01, -0.03, 0.01, 1, 0, 1,
          "no detectable difference")],
        columns=["a", "b", "metric", "n_pairs", "mean_diff", "ci_low", "ci_high", "wins", "ties", "losses",
                 "verdict"],
    )  # fmt: skip
    plots.differences_figure(
        out / "differences.png", comparisons, {("cutswap", "cutpaste", "image_AUROC"): [0.05, 0.07]}
    )
    return [
        FigureRef("figures/differences.png", "Paired differences", "Mean a − b with its interval."),
        FigureRef("figures/bottle-examples-cutswap.png", "Test images: cutswap", "Best method.", "bottle",
                  "examples"),
        FigureRef("figures/bottle-examples-imagenet-gde.png", "Test images: imagenet-gde", "Baseline.",
                  "bottle", "examples"),
        FigureRef("figures/bottle-scores.png", "Score distributions", "Normal against anomalous.", "bottle"),
        FigureRef("figures/bottle-roc.png", "ROC curves", "One line per seed.", "bottle"),
        FigureRef("figures/bottle-training.png", "Training curves", "Loss and accuracy on negatives.",
                  "bottle"),
    ]  # fmt: skip


#: Appended to a copy of the page: after the load event, every image's decoded width, as JSON in the DOM.
_IMAGE_CHECK = """<script>window.addEventListener("load", () => {
  const out = [...document.images].map(i => ({src: i.getAttribute("src"), width: i.naturalWidth,
                                              shown: i.getBoundingClientRect().width}));
  const pre = document.createElement("pre"); pre.id = "image-check"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""


def _images_in_browser(tmp_path, page: Path) -> list[dict]:
    """Each ``<img>`` of ``page`` as Chromium loaded it: src, naturalWidth (0: broken) and shown width."""
    probe = page.with_name("image-check.html")  # beside the page, so relative links resolve the same
    probe.write_text(page.read_text().replace("</body>", _IMAGE_CHECK + "</body>"))
    dom = _chromium(tmp_path, "--virtual-time-budget=20000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="image-check">(.*?)</pre>', dom, re.S)
    assert found, "the image check never ran (no load event?)"
    return json.loads(html.unescape(found.group(1)))


def test_run_page_renders_its_tables(reports, tmp_path):
    dom = _chromium(tmp_path, "--dump-dom", (reports / "r1" / "index.html").as_uri())
    assert '<table id="table-image_AUROC">' in dom
    assert "<td>98.0 ± 1.4</td>" in dom  # cutswap on bottle: mean and std over the two seeds
    assert '<table id="reference">' in dom and "<td>99.2</td>" in dom  # the published CutPaste figure


def test_index_links_every_run_and_screenshots(reports, tmp_path):
    dom = _chromium(tmp_path, "--dump-dom", (reports / "index.html").as_uri())
    assert '<a href="r1/index.html">r1</a>' in dom
    shot = tmp_path / "index.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,600", (reports / "index.html").as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_image_of_the_run_page_loads_and_the_figures_are_there(reports, tmp_path):
    page = reports / "r1" / "index.html"
    images = _images_in_browser(tmp_path, page)
    srcs = [i["src"] for i in images]
    assert srcs == [
        "figures/differences.png",
        "figures/bottle-examples-cutswap.png",
        "figures/bottle-examples-imagenet-gde.png",
        "figures/bottle-scores.png",
        "figures/bottle-roc.png",
        "figures/bottle-training.png",
    ]
    broken = [i["src"] for i in images if i["width"] == 0]
    assert not broken, f"images that did not load: {broken}"
    assert all(i["shown"] > 200 for i in images), images  # laid out at a readable size, not collapsed
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    for table in ("comparisons", "table-image_AUROC", "reference"):
        assert f'<table id="{table}">' in dom
    assert dom.index('id="figures-run"') < dom.index('id="figures-bottle"')
    assert '<div class="figrow"><figure id="fig-bottle-examples-cutswap">' in dom  # best beside baseline


def test_the_image_check_sees_a_broken_link(reports, tmp_path):
    page = reports / "r1" / "broken.html"
    page.write_text((reports / "r1" / "index.html").read_text().replace("bottle-roc.png", "missing.png"))
    broken = [i["src"] for i in _images_in_browser(tmp_path, page) if i["width"] == 0]
    assert broken == ["figures/missing.png"]


def test_run_page_screenshot(reports, tmp_path):
    """A screenshot of the whole page and of one figure: PNGs, kept where ``CUTSWAP_REPORT_SHOT`` says."""
    shot, figure = tmp_path / "page.png", tmp_path / "figure.png"
    url = (reports / "r1" / "index.html").as_uri()
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,6000", "--hide-scrollbars", url)
    one = (reports / "r1" / "figures" / "bottle-examples-cutswap.png").as_uri()
    _chromium(tmp_path, f"--screenshot={figure}", "--window-size=800,900", "--hide-scrollbars", one)
    for path in (shot, figure):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    if keep := os.environ.get("CUTSWAP_REPORT_SHOT"):
        shutil.copy(shot, keep)
        shutil.copy(figure, Path(keep).with_name(Path(keep).stem + "-figure.png"))


#: After the load event: where the answers and their figure end, in CSS pixels from the top.
_LAYOUT_CHECK = """<script>window.addEventListener("load", () => {
  const box = e => e.getBoundingClientRect();
  const img = document.querySelector("#fig-answers img");
  const out = {answers: [...document.querySelectorAll("#answers .answers li")].map(li => box(li).bottom),
               figure: img && {top: box(img).top, bottom: box(img).bottom, natural: img.naturalWidth},
               width: window.innerWidth};
  const pre = document.createElement("pre"); pre.id = "layout"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""

PUBLISHED_DEMO = Path(__file__).resolve().parents[3] / "reports" / "published" / "demo-cpu"


def test_the_demo_page_answers_every_question_beside_its_figure_within_the_first_screen(tmp_path):
    """The published demo record (8 questions, 5 metrics) rebuilt as a page: at 1280 x 800 every answer
    line and the figure of the answers end above 800 px."""
    from cutswap.report.gallery import differences_figures

    run = tmp_path / "reports" / "demo"
    (run / "figures").mkdir(parents=True)
    results = pd.read_csv(PUBLISHED_DEMO / "results.csv")
    comparisons = pd.read_csv(PUBLISHED_DEMO / "comparisons.csv")
    prov = json.loads((PUBLISHED_DEMO / "provenance.json").read_text())
    figures = differences_figures(run, results, comparisons, prov["comparisons"])
    page = run / "index.html"
    page.write_text(run_page(results, prov, figures, comparisons))
    probe = run / "layout.html"
    probe.write_text(page.read_text().replace("</body>", _LAYOUT_CHECK + "</body>"))
    dom = _chromium(
        tmp_path, "--window-size=1280,800", "--virtual-time-budget=20000", "--dump-dom", probe.as_uri()
    )
    layout = json.loads(html.unescape(re.search(r'<pre id="layout">(.*?)</pre>', dom, re.S).group(1)))
    assert layout["width"] == 1280
    assert len(layout["answers"]) == 8 and max(layout["answers"]) <= 800, layout
    assert layout["figure"]["natural"] > 0 and layout["figure"]["bottom"] <= 800, layout
    assert '<table id="questions-grid" class="grid">' in dom and '<table id="comparisons">' in dom
    if keep := os.environ.get("CUTSWAP_REPORT_SHOT"):
        _chromium(
            tmp_path, f"--screenshot={keep}", "--window-size=1280,800", "--hide-scrollbars", page.as_uri()
        )


_INDEX_CHECK = """<script>window.addEventListener("load", () => {
  const rows = () => [...document.querySelectorAll("#runs tbody tr")];
  const filter = document.getElementById("filter");
  filter.value = "r2"; filter.dispatchEvent(new Event("input"));
  const shown = rows().filter(r => !r.hidden).map(r => r.cells[1].textContent);
  filter.value = ""; filter.dispatchEvent(new Event("input"));
  const run = document.querySelector("#runs thead th:nth-child(2)");
  run.click(); run.click();  // by run name, descending
  const order = rows().map(r => r.cells[1].textContent);
  document.querySelector("#runs thead th:nth-child(3)").click();  // by date, oldest first
  const byDate = rows().map(r => r.cells[1].textContent);
  const pre = document.createElement("pre"); pre.id = "index-check";
  pre.textContent = JSON.stringify({shown, order, byDate}); document.body.appendChild(pre);
  if (location.hash === "#open") {
    rows().forEach(r => { r.querySelector("input").checked = true; });
    document.getElementById("compare").click();
  }
});</script>"""


def test_the_index_filters_sorts_and_opens_the_comparison_of_two_runs(reports, tmp_path):
    first, second = reports / "r1", reports / "r2"
    results = pd.read_csv(first / "results.csv")
    compare(results, [("cutswap", "cutpaste")], ["image_AUROC"]).to_csv(
        first / "comparisons.csv", index=False
    )
    shutil.copytree(first, second)
    prov = json.loads((second / "provenance.json").read_text())
    # r2 is older than r1, and its date is not a number ("2025-12-31 ..." must sort as a date)
    (second / "provenance.json").write_text(
        json.dumps({**prov, "run": "r2", "created": "2025-12-31T23:00:00"})
    )
    write_index(reports)
    probe = reports / "index-check.html"
    probe.write_text((reports / "index.html").read_text().replace("</body>", _INDEX_CHECK + "</body>"))
    dom = _chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    seen = json.loads(html.unescape(re.search(r'<pre id="index-check">(.*?)</pre>', dom, re.S).group(1)))
    assert seen == {"shown": ["r2"], "order": ["r2", "r1"], "byDate": ["r2", "r1"]}
    opened = _chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri() + "#open")
    assert "<h1>r1 beside r2</h1>" in opened and '<table id="agreement">' in opened, opened[-600:]


def test_the_pages_work_from_a_static_web_server(reports, tmp_path):
    """The same run page and index served over http by a plain static server on 127.0.0.1: every image
    loads and the index links the run (nothing in them needs ``file://`` or a network)."""
    import sys
    import time
    import urllib.request

    from tests.support.s3 import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(reports)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(base, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        page = reports / "r1" / "index.html"
        (page.parent / "image-check.html").write_text(
            page.read_text().replace("</body>", _IMAGE_CHECK + "</body>")
        )
        dom = _chromium(tmp_path, "--virtual-time-budget=20000", "--dump-dom", f"{base}/r1/image-check.html")
        images = json.loads(
            html.unescape(re.search(r'<pre id="image-check">(.*?)</pre>', dom, re.S).group(1))
        )
        assert images and all(i["width"] > 0 for i in images), images
        index = _chromium(tmp_path, "--dump-dom", f"{base}/index.html")
        assert '<a href="r1/index.html">r1</a>' in index
    finally:
        server.terminate()
        server.wait(timeout=10)
