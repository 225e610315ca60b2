"""``cutswap predict`` on a tiny run on disk: it gives the evaluate stage's scores for the run's own test
image files, picks the best method by default, and lists bad image files (fatal with ``--strict``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cutswap.app.cli import main
from cutswap.pipeline.readers import samples
from cutswap.pipeline.stores import open_store
from cutswap.score.detector import choose_threshold


def _predict(tiny_run, *args: str) -> int:
    return main(["--reports", str(tiny_run.reports), "predict", tiny_run.run, *args])


@pytest.mark.parametrize("method", [None, "patchcore", "cutpaste"])
def test_predict_equals_evaluate_on_the_runs_test_images(tiny_run, tmp_path, capsys, method):
    out = tmp_path / "out"
    chosen = ["--method", method] if method else []
    code = _predict(tiny_run, str(tiny_run.data / "brick" / "test"), "--out", str(out), *chosen)
    printed = capsys.readouterr().out
    assert code == 0
    results = pd.read_csv(tiny_run.reports / tiny_run.run / "results.csv")
    best = method or results.groupby("method")["image_AUROC"].mean().idxmax()
    if method is None:
        assert f"method {best} (best mean image AUROC on brick" in printed

    group = open_store(tiny_run.evaluations[best])
    table = samples(open_store(tiny_run.ingest))
    by_path = {
        str(tiny_run.data / table.at[int(i), "image_path"]): s
        for i, s in zip(group["index"][:], group["scores"][:], strict=True)
    }
    predictions = pd.read_csv(out / "predictions.csv")
    assert sorted(predictions["path"]) == sorted(by_path)
    expected = predictions["path"].map(by_path).to_numpy()
    np.testing.assert_allclose(predictions["score"].to_numpy(), expected, rtol=1e-6)

    threshold = group.attrs["threshold"]["value"]
    assert (predictions["threshold"] == threshold).all()
    anomalous = predictions["decision"] == "anomalous"
    assert (anomalous == (predictions["score"] > threshold)).all()
    assert set(predictions["decision"]) <= {"anomalous", "normal"}
    for overlay in predictions["overlay"]:
        with Image.open(out / overlay) as im:
            assert im.size[1] >= 256 and im.size[0] > im.size[1], "image and overlay side by side"


def test_threshold_by_hand_or_at_another_fpr(tiny_run, tmp_path, capsys):
    image = str(tiny_run.data / "brick" / "test" / "good")
    assert (
        _predict(tiny_run, image, "--method", "cutpaste", "--threshold", "-1", "--out", str(tmp_path / "a"))
        == 0
    )
    assert (pd.read_csv(tmp_path / "a" / "predictions.csv")["decision"] == "anomalous").all()
    assert (
        _predict(tiny_run, image, "--method", "cutpaste", "--fpr", "0.5", "--out", str(tmp_path / "b")) == 0
    )
    holdout = open_store(tiny_run.evaluations["cutpaste"])["holdout_scores"][:]
    chosen = pd.read_csv(tmp_path / "b" / "predictions.csv")["threshold"].iloc[0]
    assert chosen == pytest.approx(choose_threshold(holdout, 0.5)["value"], rel=1e-15)
    assert "(--fpr)" in capsys.readouterr().out


@pytest.fixture
def messy_folder(tiny_run, tmp_path) -> Path:
    """One good image among an empty file, a text file named .png, and a file without an image extension."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    shutil.copy(tiny_run.data / "brick" / "test" / "good" / "000.png", folder / "good.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")
    (folder / "readme.txt").write_text("hello")
    return folder


def test_bad_image_files_are_listed_not_fatal(tiny_run, messy_folder, tmp_path, capsys):
    out = tmp_path / "out"
    missing = str(tmp_path / "missing.png")
    code = _predict(tiny_run, str(messy_folder), missing, str(tmp_path / "*.jpg"), "--out", str(out))
    err = capsys.readouterr().err
    assert code == 0
    for name in ("empty.png", "notes.png", "readme.txt", "missing.png", "*.jpg"):
        assert name in err, name
    assert "5 file(s) could not be used" in err and "Traceback" not in err
    assert pd.read_csv(out / "predictions.csv")["path"].tolist() == [str(messy_folder / "good.png")]
    assert len(pd.read_csv(out / "skipped.csv")) == 5


def test_strict_makes_bad_image_files_fatal(tiny_run, messy_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert _predict(tiny_run, str(messy_folder), "--strict", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "error: --strict: 3 file(s) above cannot be used; nothing was written" in err
    assert "empty.png" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--category", "tile"], "has no category 'tile'; it has brick"),
        (["--method", "cutswap"], "has no method 'cutswap' on 'brick'; it has cutpaste, imagenet-gde"),
        (["--method", "cutpaste", "--seed", "3"], "has no seed 3 for cutpaste on 'brick'; it has 0"),
        (["--storage", "/nonexistent"], "pass --storage with the storage root the run used"),
    ],
)
def test_unknown_choices_name_what_exists(tiny_run, tmp_path, capsys, args, message):
    assert _predict(tiny_run, str(tmp_path), *args) == 2
    assert message in capsys.readouterr().err


def test_unknown_run_names_the_runs(tiny_run, tmp_path, capsys):
    assert main(["--reports", str(tiny_run.reports), "predict", "nope", str(tmp_path)]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "export"])
def test_an_out_that_cannot_take_the_output_is_refused_before_loading(tiny_run, tmp_path, capsys, command):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("x")
    extra = [str(tmp_path)] if command == "predict" else []
    for out, message in [(a_file, "is a file; give a folder"), (theirs, "holds other files (thesis.tex)")]:
        args = ["--reports", str(tiny_run.reports), command, tiny_run.run, *extra, "--out", str(out)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"--out {out} {message}" in err and "Traceback" not in err
    assert (theirs / "thesis.tex").exists()


def test_a_failure_mid_way_leaves_the_previous_output_whole(tiny_run, tmp_path, capsys, monkeypatch):
    from cutswap.deploy import predict

    out = tmp_path / "out"
    images = str(tiny_run.data / "brick" / "test" / "good")
    assert _predict(tiny_run, images, "--method", "cutpaste", "--out", str(out)) == 0
    before = (out / "predictions.csv").read_bytes()
    written = []

    def fail_on_the_second(path, *args):
        written.append(path)
        if len(written) == 2:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(predict, "write_overlay", fail_on_the_second)
    with pytest.raises(OSError):
        _predict(tiny_run, images, "--method", "cutpaste", "--threshold", "-1", "--out", str(out))
    assert (out / "predictions.csv").read_bytes() == before
    assert len(list((out / "overlays").iterdir())) == len(pd.read_csv(out / "predictions.csv"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_run_names_stay_inside_the_reports_root(tiny_run, tmp_path, capsys):
    for name in ("../x", str(tiny_run.reports / tiny_run.run), ".hidden"):
        assert main(["--reports", str(tiny_run.reports), "show", name]) == 2
        assert "is not a run name" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is broken"),
        (b"\xff\xfe\x00garbage", "is broken"),
        (b"dataset,category,method,seed,image_AUROC\n", "has no rows"),
        (b"a,b\n1,2\n", "has no column(s)"),
    ],
)
def test_a_broken_run_is_named_by_show_and_listed_by_runs(tiny_run, tmp_path, capsys, content, message):
    reports = tmp_path / "reports"
    shutil.copytree(tiny_run.reports, reports)
    (reports / "broken").mkdir()
    (reports / "broken" / "results.csv").write_bytes(content)
    assert main(["--reports", str(reports), "show", "broken"]) == 2
    err = capsys.readouterr().err
    assert f"results.csv {message}" in err and "rerun its report" in err and "Traceback" not in err
    assert main(["--reports", str(reports), "runs"]) == 0
    listed = capsys.readouterr().out
    assert "broken: " in listed and tiny_run.run in listed


def test_an_onnx_only_export_leaves_no_stale_program_beside_it(tiny_run, tmp_path, capsys):
    out = tmp_path / "export"
    out.mkdir()
    (out / "detector.pt2").write_bytes(b"an earlier export's program")
    args = ["--reports", str(tiny_run.reports), "export", tiny_run.run, "--method", "cutpaste"]
    assert main([*args, "--onnx-only", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["detector.onnx"]
