"""`python -m dqn.evaluate`: scores of a short run's checkpoints, eval.json, and every user
mistake reported in one line."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from dqn.cli.evaluate import main
from dqn.run.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import TINY_OVERRIDES, run_python
from tests.test_train import run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return run(tmp_path_factory.mktemp("evaluate"), "run", *TINY_OVERRIDES)[1]


def test_evaluates_the_best_checkpoint_of_a_run_directory(run_dir, capsys):
    assert main([f"checkpoint={run_dir}", "episodes=7", "seed=4"]) == 0
    report = json.loads((run_dir / "checkpoints" / "eval.json").read_text())
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert report["checkpoint"] == str((run_dir / "checkpoints" / "best.pt").resolve())
    assert report["env_step"] == best["env_step"]
    assert report["env"] == {"id": "CartPole-v1", "max_episode_steps": None, "num_envs": 1,
                             "vectorization": "sync"}
    assert (report["episodes"], report["seed"]) == (7, 4)
    assert len(report["returns"]) == len(report["lengths"]) == 7
    assert report["mean"] == pytest.approx(np.mean(report["returns"]))
    assert report["std"] == pytest.approx(np.std(report["returns"]))
    assert (report["min"], report["max"]) == (min(report["returns"]), max(report["returns"]))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"best.pt (env step {best['env_step']}) on CartPole-v1: "
                        f"{report['mean']:.1f} ± {report['std']:.1f} over 7 episodes "
                        f"(min {report['min']:.1f}, max {report['max']:.1f}; seed 4)")
    assert lines[1] == f"wrote {run_dir / 'checkpoints' / 'eval.json'}"


def test_same_seed_same_scores(run_dir):
    reports = []
    for _ in range(2):
        assert main([f"checkpoint={run_dir}", "episodes=5", "seed=1"]) == 0
        reports.append(json.loads((run_dir / "checkpoints" / "eval.json").read_text()))
    assert reports[0]["returns"] == reports[1]["returns"]


def test_checkpoint_file_with_a_time_limit_override(run_dir):
    last = run_dir / "checkpoints" / "last.pt"
    assert main([f"checkpoint={last}", "episodes=4", "env.max_episode_steps=5"]) == 0
    report = json.loads((run_dir / "checkpoints" / "eval.json").read_text())
    assert report["checkpoint"] == str(last.resolve())
    assert report["env"]["max_episode_steps"] == 5
    assert report["lengths"] == [5, 5, 5, 5]  # CartPole never falls within 5 steps


def test_records_videos_into_the_run_or_beside_a_loose_checkpoint(run_dir, tmp_path, capsys):
    assert main([f"checkpoint={run_dir}", "episodes=2", "video.episodes=2",
                 "video.max_steps=10"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"recorded greedy episodes of best.pt (returns 10, 10) to "
        f"{run_dir.resolve() / 'videos'}")
    assert {"best-episode-0.mp4", "best-episode-1.mp4", "best-episode-0.gif"} <= {
        p.name for p in (run_dir / "videos").iterdir()}
    loose = tmp_path / "agent.pt"
    loose.write_bytes((run_dir / "checkpoints" / "last.pt").read_bytes())
    assert main([f"checkpoint={loose}", "episodes=2", "video.episodes=1",
                 "video.max_steps=5"]) == 0
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [
        "agent-episode-0.gif", "agent-episode-0.mp4"]
    assert (tmp_path / "eval.json").is_file()


def misfit_checkpoint(run_dir: Path, tmp_path: Path) -> Path:
    """The run's weights with a stored config that describes a wider network."""
    payload = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    config = {**payload["config"], "network": {"hidden_sizes": [64, 64], "activation": "relu"}}
    path = tmp_path / "misfit.pt"
    save_checkpoint(path, payload["model"], config, env_step=payload["env_step"])
    return path


@pytest.mark.parametrize("arguments,words", [
    (["checkpoint=nope.pt"], "checkpoint=nope.pt: no such file or directory"),
    (["checkpoint=RUN/metrics.csv"], "metrics.csv: not a readable dqn checkpoint"),
    (["checkpoint=MISFIT"], "misfit.pt: its weights do not fit the network its config "
                            "describes (network=mlp with hidden_sizes=[64, 64], env "
                            "CartPole-v1): encoder.layers.0.weight is of shape (16, 4) in the "
                            "checkpoint, of shape (64, 4)"),
    (["checkpoint=RUN", "env.id=Acrobot-v1"],
     "env.id='Acrobot-v1' has observation space Box(shape=(6,), dtype=float32), but the agent "
     "in RUN/checkpoints/best.pt was trained on 'CartPole-v1' with Box(shape=(4,)"),
])
def test_unusable_checkpoint_or_env_is_one_clear_line(run_dir, tmp_path, arguments, words):
    misfit = misfit_checkpoint(run_dir, tmp_path)
    arguments = [a.replace("RUN", str(run_dir)).replace("MISFIT", str(misfit))
                 for a in arguments]
    result = run_python(tmp_path, "-m", "dqn.evaluate", *arguments)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words.replace("RUN", str(run_dir)) in lines[0], lines
    assert not list(tmp_path.rglob("eval.json"))


@pytest.mark.parametrize("arguments,words", [
    ([], "checkpoint is required"),
    (["checkpoint=RUN", "episods=3"], "unknown key 'episods'; allowed keys: checkpoint, "
                                      "episodes, seed, env.id, env.max_episode_steps"),
    (["checkpoint=RUN", "episodes=0"], "episodes='0' is not valid: must be an integer >= 1"),
    (["checkpoint=RUN", "seed=x"], "seed='x' is not valid: must be an integer >= 0"),
    (["checkpoint=RUN", "env.max_episode_steps=-1"],
     "env.max_episode_steps='-1' is not valid: must be an integer >= 1 or null"),
    (["checkpoint=RUN", "env.id=Nope-v0"], "env.id='Nope-v0' cannot be made"),
    (["checkpoint=RUN", "5"], "'5' is not key=value; usage: python -m dqn.evaluate"),
    (["checkpoint=ROOT"], "is a directory without checkpoints/best.pt"),
])
def test_argument_mistake_is_one_clear_line(run_dir, capsys, arguments, words):
    arguments = [a.replace("RUN", str(run_dir)).replace("ROOT", str(run_dir.parent))
                 for a in arguments]
    assert main(arguments) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(("Config error: ", "Checkpoint error: "))
    assert captured.err.count("\n") == 1 and words in captured.err


def test_help(capsys):
    assert main(["--help"]) == 0
    assert "checkpoint=PATH" in capsys.readouterr().out


def loose_copy(run_dir: Path, folder: Path) -> Path:
    """The run's best.pt copied alone into `folder` (eval.json and videos/ go beside it)."""
    folder.mkdir()
    return Path(shutil.copy(run_dir / "checkpoints" / "best.pt", folder / "best.pt"))


def read_only(folder: Path) -> None:
    """chmod `folder` read-only; skip the test where that does not stop this user (root:
    the tests below make writes fail in ways that stop root too)."""
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        folder.chmod(0o755)
        pytest.skip("this user writes into read-only folders (root)")


def test_checkpoint_in_a_read_only_folder_still_prints_its_score(run_dir, tmp_path, capsys):
    checkpoint = loose_copy(run_dir, tmp_path / "copy")
    read_only(checkpoint.parent)
    try:
        status = main([f"checkpoint={checkpoint}", "episodes=3", "video.episodes=1"])
    finally:
        checkpoint.parent.chmod(0o755)
    captured = capsys.readouterr()
    assert status == 1
    assert captured.out.startswith("best.pt (env step ") and " over 3 episodes " in captured.out
    assert captured.err.splitlines() == [
        f"File error: cannot write {checkpoint.parent / 'eval.json'}: Permission denied; the "
        "score above is not saved",
        f"File error: cannot write videos to {checkpoint.parent / 'videos'}: Permission denied"]


@pytest.mark.parametrize("how,reason", [("full disk", "No space left on device"),
                                        ("a folder in the way", "Is a directory")])
def test_score_is_printed_when_eval_json_cannot_be_written(run_dir, tmp_path, capsys, how,
                                                           reason):
    checkpoint = loose_copy(run_dir, tmp_path / "copy")
    out = checkpoint.parent / "eval.json"
    if how == "full disk":
        if not Path("/dev/full").exists():
            pytest.skip("no /dev/full here")
        out.symlink_to("/dev/full")  # every write to it fails with ENOSPC, even for root
    else:
        out.mkdir()
    assert main([f"checkpoint={checkpoint}", "episodes=3"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("best.pt (env step ") and " over 3 episodes " in captured.out
    assert captured.err == (f"File error: cannot write {out}: {reason}; the score above is "
                            "not saved\n")


def test_videos_that_cannot_be_written_are_reported_in_one_line(run_dir, tmp_path, capsys):
    checkpoint = loose_copy(run_dir, tmp_path / "copy")
    videos = checkpoint.parent / "videos"
    videos.write_text("")  # a file where the folder must go
    assert main([f"checkpoint={checkpoint}", "episodes=2", "video.episodes=1",
                 "video.max_steps=5"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1] == f"wrote {checkpoint.parent / 'eval.json'}"
    assert captured.err == f"File error: cannot write videos to {videos}: it is a file\n"


@pytest.mark.parametrize("value,count", [(math.nan, "1 NaN"), (-math.inf, "1 inf")])
def test_checkpoint_with_non_finite_weights_is_refused(run_dir, tmp_path, capsys, value,
                                                       count):
    payload = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    weights = {key: tensor.clone() for key, tensor in payload["model"].items()}
    weights["encoder.layers.2.weight"][3, 5] = value
    path = tmp_path / "diverged.pt"
    save_checkpoint(path, weights, payload["config"], env_step=payload["env_step"])
    assert main([f"checkpoint={path}", "episodes=2"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"Checkpoint error: {path}: its weights are not finite, starting "
                            f"with encoder.layers.2.weight ({count} among its 256 values); a "
                            "diverged agent cannot be evaluated\n")
    assert not (tmp_path / "eval.json").exists()
