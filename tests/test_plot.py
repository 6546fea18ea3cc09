"""scripts/plot_run.py: a learning-curve PNG of a short run, and its mistakes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, TINY_OVERRIDES, run_python
from tests.test_train import run

SCRIPT = REPO / "scripts" / "plot_run.py"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return run(tmp_path_factory.mktemp("plot"), "tiny-run", *TINY_OVERRIDES)[1]


def test_plots_a_run_into_a_png(run_dir, tmp_path):
    result = run_python(tmp_path, str(SCRIPT), str(run_dir))
    assert result.returncode == 0, result.stderr
    png = run_dir / "curves.png"
    assert result.stdout.strip() == f"wrote {png}"
    assert png.stat().st_size > 20_000  # two panels of curves, a title, legends
    image = Image.open(png)
    assert image.format == "PNG" and image.size == (1000, 750)
    pixels = np.asarray(image.convert("L"))
    assert (pixels < 128).mean() > 0.01  # drawn on, not blank


def test_out_option(run_dir, tmp_path):
    result = run_python(tmp_path, str(SCRIPT), str(run_dir), "--out", "elsewhere.png")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "elsewhere.png").stat().st_size > 0


@pytest.mark.parametrize("make,words", [
    (lambda d: d / "nope", "nope is not a directory: pass a run directory"),
    (lambda d: d, "episodes.csv is missing: is"),
])
def test_not_a_run_directory_is_one_clear_line(tmp_path, make, words):
    result = run_python(tmp_path, str(SCRIPT), str(make(tmp_path)))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr


def test_moving_average_over_the_last_hundred():
    spec = importlib.util.spec_from_file_location("plot_run", SCRIPT)
    plot_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_run)
    values = np.arange(1.0, 301.0)
    average = plot_run.moving_average(values)
    assert average[0] == 1 and average[1] == 1.5  # fewer than 100 so far: all of them
    assert average[99] == np.mean(values[:100]) and average[299] == np.mean(values[200:])
