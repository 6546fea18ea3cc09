"""The local board as a user sees it after a sweep, in a real browser: a small sweep (hard
against soft targets, two seeds, each recording a GIF), `scripts/compare.py --board`, then
`swanlab watch` opened in headless Chromium (Debian's chromium and chromium-driver) driven by
selenium. Every experiment listed, charts drawn, the summary table's numbers equal to each
run's summary.json and metrics.csv, a config a person can read, the Logs tab and the
environment card filled, the GIF playing, each configuration as its mean and band, and no
console errors on any page.

Skipped, with the reason, where Chromium, its driver or selenium is missing; where
DQN_REQUIRE_BROWSER=1 (CI, which installs them) that fails instead. With
DQN_BOARD_SCREENSHOTS=DIR the pages are also saved there as PNG (docs/img/ comes from it).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_python
from tests.dashboard import dashboard

REPO = Path(__file__).resolve().parents[1]
SWEEP = ["-m", "seed=0,1", "target=hard,soft", "train.total_steps=3000",
         "buffer.learning_starts=500", "eval.every_steps=1000", "eval.episodes=3",
         "eval.final_episodes=5", "logger.every_steps=500", "video.episodes=1",
         "video.max_steps=30", "hydra.sweep.dir=sweep"]
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1600,1000")
FIXED_COLUMNS = ["Name", "State", "Created", "Runtime"]  # the table's own, before the config


def _unavailable(reason: str) -> None:
    """Skip with the reason; fail instead where DQN_REQUIRE_BROWSER=1 (CI), so that a green
    run means the browser test ran."""
    if os.environ.get("DQN_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        _unavailable("Chromium not installed: apt-get install chromium chromium-driver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _unavailable("selenium not installed: pip install -e '.[test]'")
    return browser, driver


class Browser:
    """Headless Chromium on the board: pages by path, tables and charts as data, and the
    console errors of every page opened (each test asserts there were none)."""

    def __init__(self, browser: str, driver: str, base: str, profile: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(driver), options=options)
        self.base, self.console_errors = base, []
        self.screenshots = os.environ.get("DQN_BOARD_SCREENSHOTS")

    def open(self, path: str, ready: str, count: int = 1, shot: str | None = None) -> None:
        """Open `path` and wait until `count` elements match the CSS selector `ready`."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.collect_errors()
        self.driver.get(self.base + path)
        WebDriverWait(self.driver, 30).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ready)) >= count)
        time.sleep(0.5)  # the last requests of the page settle (and show in the console)
        self.shot(shot)

    def shot(self, name: str | None) -> None:
        if self.screenshots and name:
            Path(self.screenshots).mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(Path(self.screenshots) / f"{name}.png"))

    def until(self, read: Any, ready: Any, timeout: float = 30) -> Any:
        """`read()` once `ready(value)` holds (the page draws as its data arrives);
        the last value read when it never does, for the assertion to show."""
        deadline = time.monotonic() + timeout
        while True:
            value = read()
            if ready(value) or time.monotonic() > deadline:
                return value
            time.sleep(0.5)

    def run(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def text(self) -> str:
        return self.run("return document.body.innerText")

    def collect_errors(self) -> list[str]:
        self.console_errors += [entry["message"] for entry in self.driver.get_log("browser")
                                if entry["level"] == "SEVERE"]
        return self.console_errors

    def table(self) -> list[dict[str, str]]:
        """The experiments table as shown: one {column: text} per row."""
        return self.run("""
            const table = document.querySelector('.dashboard-table');
            const heads = [...table.querySelectorAll('.table-header .table-header-item')]
                .map(h => h.textContent.trim());
            return [...table.querySelectorAll('div.line')].map(row => Object.fromEntries(
                [...row.querySelectorAll(':scope > .cell')]
                    .map((cell, i) => [heads[i], cell.textContent.trim()])));""")

    def columns(self) -> list[str]:
        return self.run("""return [...document.querySelectorAll(
            '.dashboard-table .table-header .table-header-item')].map(h => h.textContent.trim())""")

    def charts(self) -> list[dict[str, Any]]:
        """Each chart's title, the runs its legend lists, and how many of its canvas pixels
        are drawn in one of their colours."""
        return self.run("""
            return [...document.querySelectorAll('section.chart-container')]
                .filter(chart => chart.querySelector('canvas')).map(chart => {
              const canvas = chart.querySelector('canvas');
              const legend = [...chart.querySelectorAll('.lc-legend-item')];
              const colours = new Set(legend.map(e => getComputedStyle(e).color));
              const data = canvas.getContext('2d')
                  .getImageData(0, 0, canvas.width, canvas.height).data;
              let drawn = 0;
              for (let i = 0; i < data.length; i += 4)
                if (data[i + 3] === 255
                    && colours.has(`rgb(${data[i]}, ${data[i + 1]}, ${data[i + 2]})`)) drawn++;
              return {title: chart.querySelector('p.font-semibold').textContent.trim(),
                      runs: legend.map(e => e.textContent.trim()), drawn};
            });""")

    def quit(self) -> None:
        self.driver.quit()


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def _number(text: str) -> float:
    return float(text)


def _shown(value: float) -> Any:
    """`value` as the board prints it: at most 4 decimals, cut, not rounded."""
    return pytest.approx(value, abs=1.01e-4)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """The sweep trained and compared, its board served and opened in Chromium."""
    browser, driver = _chromium()
    cwd = tmp_path_factory.mktemp("board")
    log_dir = cwd / "swanlog"
    started = time.monotonic()
    trained = run_python(cwd, "-m", "dqn.train", *SWEEP, f"logger.log_dir={log_dir}")
    assert trained.returncode == 0, trained.stderr
    compared = run_python(cwd, str(REPO / "scripts" / "compare.py"), "sweep", "--board")
    assert compared.returncode == 0, compared.stderr
    runs = {}
    for folder in sorted((cwd / "sweep").glob("*_*")):
        summary = json.loads((folder / "summary.json").read_text())
        runs[summary["run_name"]] = {"summary": summary,
                                     "metrics": _read_csv(folder / "metrics.csv")}
    print(f"sweep and compare: {time.monotonic() - started:.0f} s")
    with dashboard(log_dir) as api, tempfile.TemporaryDirectory() as profile:
        page = Browser(browser, driver, api.base.removesuffix("/api/v1"), profile)
        try:
            experiments = {e["name"]: e for e in api.experiments()}
            yield {"page": page, "api": api, "runs": runs, "experiments": experiments}
        finally:
            page.quit()


def test_every_experiment_is_listed_and_every_chart_drawn(board):
    page, experiments = board["page"], board["experiments"]
    assert set(board["runs"]) == {"target=hard · seed=0", "target=hard · seed=1",
                                  "target=soft · seed=0", "target=soft · seed=1"}
    aggregates = {f"target={t} · {kind}" for t in ("hard", "soft")
                  for kind in ("mean of 2 seeds", "mean's 95% CI, low", "mean's 95% CI, high")}
    assert set(experiments) == set(board["runs"]) | aggregates
    page.open("/", "div.line", len(experiments), shot="table")
    listed = page.run("""return [...document.querySelectorAll('a[href^="/experiment/"]')]
                         .map(a => a.textContent.trim())""")
    assert set(experiments) <= set(listed)
    page.open("/charts", "canvas", 12, shot="charts")
    charts = page.until(lambda: {chart["title"]: chart for chart in page.charts()},
                        lambda charts: all(c["drawn"] > 20 for c in charts.values()))
    assert {"eval/return_mean", "train/episode_return", "train/loss", "final/return_mean",
            "perf/sps"} <= set(charts)
    for title, chart in charts.items():
        assert chart["drawn"] > 20, f"{title}: nothing drawn in its runs' colours"
        assert set(board["runs"]) <= set(chart["runs"]), title
    assert set(charts["eval/return_mean"]["runs"]) == set(experiments)  # aggregates too
    assert page.collect_errors() == []


def test_summary_table_shows_each_runs_own_numbers(board):
    page = board["page"]
    page.open("/", "div.line", len(board["experiments"]))
    page.run("""[...document.querySelectorAll('span')].find(s => s.textContent.trim()
                === 'Only summary').click()""")
    rows = page.until(lambda: {row["Name"]: row for row in page.table()},
                      lambda rows: all("final/return_mean" in row for row in rows.values()))
    page.shot("summary")
    for name, run in board["runs"].items():
        row, summary, last = rows[name], run["summary"], run["metrics"][-1]
        assert "TypeError" not in row.values(), row
        assert _number(row["final/return_mean"]) == _shown(summary["final_eval"]["mean"])
        assert _number(row["final/return_std"]) == _shown(summary["final_eval"]["std"])
        assert _number(row["eval/best_return"]) == _shown(summary["best_eval_return"])
        assert _number(row["eval/return_mean"]) == _shown(float(last["eval_return_mean"]))
        assert _number(row["eval/return_std"]) == _shown(float(last["eval_return_std"]))
        assert _number(row["train/epsilon"]) == _shown(float(last["epsilon"]))
        assert _number(row["train/episodes"]) == summary["episodes"]
    for target in ("hard", "soft"):
        seeds = [run for name, run in board["runs"].items() if f"target={target}" in name]
        mean = rows[f"target={target} · mean of 2 seeds"]
        finals = [run["summary"]["final_eval"]["mean"] for run in seeds]
        assert _number(mean["final/return_mean"]) == _shown(sum(finals) / 2)
        assert _number(rows[f"target={target} · mean's 95% CI, low"]["final/return_mean"]) \
            == _shown(min(finals))  # two seeds: the bootstrap band is their range
    assert page.collect_errors() == []


def test_config_reads_once_per_setting_swept_keys_first_nulls_as_null(board):
    page = board["page"]
    page.open("/", "div.line", len(board["experiments"]))
    columns = page.columns()
    config = [c for c in columns[len(FIXED_COLUMNS):] if "/" not in c]  # then the metrics
    assert columns[:len(FIXED_COLUMNS)] == FIXED_COLUMNS
    assert config[:3] == ["aggregate", "target", "seed"]  # newest (aggregates) listed first
    assert len(config) == len(set(config)) < 60, config
    assert not [c for c in config if c.startswith(("choices.", "options.", "logger.log"))]
    rows = page.table()
    assert {row["env.max_episode_steps"] for row in rows} == {"null"}
    run = board["experiments"]["target=soft · seed=1"]
    page.open(f"/experiment/{run['id']}/index", ".data-line", 40, shot="card")
    pairs = page.run("""return [...document.querySelectorAll('.data-line')].map(line =>
        [...line.querySelectorAll('.body-item')].map(item => item.textContent.trim()))""")
    card = dict(pair for pair in pairs if len(pair) == 2)
    assert pairs[0] == ["target", "soft"] and pairs[1] == ["seed", "1"]
    assert card["env.max_episode_steps"] == "null" and card["optimizer.clip_grad_value"] == "null"
    assert not [pair for pair in pairs if pair[-1] in ("{}", "[object Object]")]
    assert page.collect_errors() == []


def test_logs_tab_and_environment_card(board):
    page = board["page"]
    run = board["experiments"]["target=hard · seed=0"]
    page.open(f"/experiment/{run['id']}/log", ".log-line", 4, shot="logs")
    lines = page.run("return [...document.querySelectorAll('.log-line')]"
                     ".map(l => l.textContent)")
    assert any("step 1000 | eval" in line for line in lines), lines
    page.open(f"/experiment/{run['id']}/env/index", "h1", 3, shot="environment")
    text = page.text()
    assert socket.gethostname() in text and "python -m dqn.train -m seed=0,1" in text
    assert "Unkown" not in text and "Unknown" not in text
    assert page.collect_errors() == []


def test_video_run_plays_its_gif(board):
    page = board["page"]
    run = board["experiments"]["target=soft · seed=0"]
    page.open(f"/experiment/{run['id']}/chart", ".image-chart img")
    panels = page.run("""return [...document.querySelectorAll('.image-chart')].map(panel => {
        panel.scrollIntoView();
        const img = panel.querySelector('img');
        return [panel.querySelector('p').textContent.trim(), img.src.slice(0, 14),
                img.complete && img.naturalWidth > 0];})""")
    assert panels == [["video/best", "data:image/gif", True]]  # a GIF, decoded by the browser
    page.shot("video")
    assert page.collect_errors() == []


def test_configurations_compared_as_their_mean_and_band(board):
    """With the runs hidden (the eye icon beside each), each chart draws one line per
    configuration and its band: hard against soft. (Last: hiding is saved by the board.)"""
    page, runs = board["page"], board["runs"]
    page.open("/charts", "canvas", 12)
    for name in runs:
        page.run("""document.querySelector(`a.experiment-link[title="${arguments[0]}"]`
                    + ' button.show-button').click()""", name)
    aggregates = sorted(set(board["experiments"]) - set(runs))
    shown = page.until(  # the charts draw again, without the hidden runs
        lambda: {c["title"]: c for c in page.charts()}.get("eval/return_mean", {}),
        lambda chart: sorted(chart.get("runs", [])) == aggregates and chart["drawn"] > 20)
    assert sorted(shown["runs"]) == aggregates and shown["drawn"] > 20
    page.run("document.querySelector('canvas').scrollIntoView({block: 'center'})")
    page.shot("configurations")
    assert page.collect_errors() == []
