"""``cutswap open``: prints a run's page and opens a browser only where one can open."""

from __future__ import annotations

import pytest

from cutswap.app import cli


@pytest.fixture
def reports(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "index.html").write_text("<html></html>")
    return tmp_path


@pytest.fixture
def opened(monkeypatch):
    import webbrowser

    calls: list[str] = []
    monkeypatch.setattr(webbrowser, "open", calls.append)
    for name in ("CI", "BROWSER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_open_prints_the_page_and_opens_it_where_a_browser_is(reports, opened, monkeypatch, capsys):
    page = (reports / "demo" / "index.html").resolve()
    assert cli.main(["--reports", str(reports), "open", "demo"]) == 0
    assert capsys.readouterr().out.strip() == str(page)
    assert opened == [] or cli.sys.platform in ("darwin", "win32")  # no display, no BROWSER: only printed
    monkeypatch.setenv("BROWSER", "true")
    assert cli.main(["--reports", str(reports), "open", "demo"]) == 0
    assert opened[-1] == page.as_uri()
    assert cli.main(["--reports", str(reports), "open", "demo", "--no-browser"]) == 0
    monkeypatch.setenv("CI", "1")
    assert cli.main(["--reports", str(reports), "open", "demo"]) == 0
    assert len(opened) == 1


def test_open_of_an_unknown_run_is_an_error(reports, opened, capsys):
    assert cli.main(["--reports", str(reports), "open", "nope"]) == 2
    assert "error: no page" in capsys.readouterr().err and opened == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "nan"], "'nan' is not a finite number"),
        (["--threshold=-inf"], "'-inf' is not a finite number"),
        (["--threshold", "x"], "'x' is not a number"),
        (["--fpr", "1.5"], "strictly between 0 and 1"),
        (["--batch-size", "0"], "'0' is not a positive integer"),
        (["--batch-size", "-3"], "'-3' is not a positive integer"),
    ],
)
def test_predict_refuses_values_that_decide_nothing_before_loading_anything(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as info:
        cli.main(["--reports", str(tmp_path), "predict", "no-such-run", "img.png", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
