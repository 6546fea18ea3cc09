"""Start SwanLab's local dashboard (`swanlab watch`) and read runs through its HTTP API,
so tests check what a user would see in `swanlab watch outputs/swanlog`."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _get(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:
        body = json.load(error)
    if body.get("code") != 0:
        raise RuntimeError(f"GET {url} -> {body}")
    return body["data"]


class Dashboard:
    def __init__(self, base: str) -> None:
        self.base = base

    def experiments(self) -> list[dict[str, Any]]:
        """Every run of the log directory: id, name, status (1 done, -1 crashed), config."""
        return _get(f"{self.base}/project")["experiments"]

    def metric_keys(self, experiment_id: int) -> set[str]:
        charts = _get(f"{self.base}/experiment/{experiment_id}/chart")["charts"]
        return {source for chart in charts for source in chart["source"]}

    def series(self, experiment_id: int, key: str) -> list[tuple[int, float]]:
        tag = urllib.parse.quote(key, safe="")
        points = _get(f"{self.base}/experiment/{experiment_id}/tag/{tag}")["list"]
        return [(p["index"], p["data"]) for p in points]

    def experiment(self, experiment_id: int) -> dict[str, Any]:
        """One run as its card shows it: name, config, system (the environment card)."""
        return _get(f"{self.base}/experiment/{experiment_id}")

    def summaries(self) -> dict[str, dict[str, Any]]:
        """The experiments table's "Only summary" values: {run name: {metric: last value}}."""
        return _get(f"{self.base}/project/summaries")["summaries"]

    def card_summary(self, experiment_id: int) -> dict[str, Any]:
        """The last value of each metric as the run's card lists it."""
        rows = _get(f"{self.base}/experiment/{experiment_id}/summary")["summaries"]
        return {row["key"]: row["value"] for row in rows}

    def log_lines(self, experiment_id: int) -> list[str]:
        """The run's Logs tab ([] when the board finds none)."""
        try:
            return _get(f"{self.base}/experiment/{experiment_id}/recent_log")["logs"]
        except RuntimeError:
            return []


@contextmanager
def dashboard(log_dir: Path, timeout: float = 60.0) -> Iterator[Dashboard]:
    """`swanlab watch log_dir` on a free port, stopped on exit."""
    with socket.socket() as probe:  # a free port; swanlab moves on by itself if it is taken
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exe = Path(sys.executable).with_name("swanlab")
    process = subprocess.Popen([str(exe), "watch", str(log_dir), "--host", "127.0.0.1",
                                "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    found: dict[str, str] = {}

    def read_banner() -> None:  # the port actually used is printed in the banner
        for line in process.stdout:
            match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            if match and "port" not in found:
                found["port"] = match.group(1)

    threading.Thread(target=read_banner, daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"swanlab watch exited with {process.returncode}")
            if "port" in found:
                base = f"http://127.0.0.1:{found['port']}/api/v1"
                try:
                    _get(f"{base}/project")
                    break
                except (OSError, RuntimeError):
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError("swanlab watch did not answer")
            time.sleep(0.2)
        yield Dashboard(base)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
