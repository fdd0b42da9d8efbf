"""A small conv FSNN trained with IDE reaches >= 95% test accuracy on scikit-learn's
bundled digits (the README's main job, run as a test). Its run time is a benchmark figure
(README), not asserted here: a loaded CI machine must not fail a behaviour test."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))

import train_digits  # noqa: E402


def test_conv_fsnn_learns_sklearn_digits(capsys):
    accuracy = train_digits.main(["--verbose", "0"])
    out = capsys.readouterr().out
    assert accuracy >= 0.95, out
    assert "average firing rate per layer: layer 1:" in out
    assert "equilibrium residual" in out
