"""A small conv FSNN trained with IDE reaches >= 95% test accuracy on scikit-learn's
bundled digits within a couple of CPU minutes (the README's main job, run as a test)."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))

import train_digits  # noqa: E402


def test_conv_fsnn_learns_sklearn_digits(capsys):
    start = time.perf_counter()
    accuracy = train_digits.main(["--verbose", "0"])
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out
    assert accuracy >= 0.95, out
    assert "average firing rate per layer: layer 1:" in out
    assert "equilibrium residual" in out
    assert elapsed < 240, f"took {elapsed:.0f} s"
