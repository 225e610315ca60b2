"""What ``cutswap predict`` and ``export`` say of a threshold: where it was chosen, and (on stderr) when the
run's own test set showed that it does not hold."""

from __future__ import annotations

import argparse

import numpy as np

from cutswap.app.detect import prediction_threshold, threshold_line, warn_if_not_holding
from cutswap.score.detector import choose_threshold, operating_point_check


def _stored(fp: int) -> dict:
    info = choose_threshold(np.arange(99.0), 0.01)
    test = {"fp": fp, "tn": 100 - fp}
    return {**info, "source": "validation", "test": test, "check": operating_point_check(info, fp, 100)}


def test_a_threshold_that_did_not_hold_is_warned_about_on_stderr(capsys):
    held, broken = _stored(1), _stored(40)
    assert broken["check"]["holds"] is False and held["check"]["holds"] is True
    warn_if_not_holding(held, "stored")
    assert capsys.readouterr() == ("", "")
    warn_if_not_holding(broken, "stored")
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("warning: this threshold does not hold") and "40 of 100" in err
    warn_if_not_holding(broken, "fpr")  # a threshold chosen anew was not what the run checked
    assert capsys.readouterr() == ("", "")


def test_a_threshold_chosen_anew_names_the_runs_calibration_images():
    class Detector:
        threshold = _stored(1)
        holdout_scores = np.arange(99.0)

    args = argparse.Namespace(threshold=None, fpr=0.05)
    info, source = prediction_threshold(args, Detector())
    assert source == "fpr" and "normal validation images (n=99)" in threshold_line(info, source)
    assert "normal validation images (n=99)" in threshold_line(Detector.threshold, "stored")
