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
