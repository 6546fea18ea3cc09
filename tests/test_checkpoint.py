"""Checkpoints: round trip, atomic writes, and refusal of anything that is not one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dqn.nets import build_q_network
from dqn.nets.encoders import MLPConfig
from dqn.run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tests.test_agent import SPACE

CONFIG = {"network": {"hidden_sizes": [8], "activation": "relu"}, "seed": 3}


def test_round_trip(tmp_path: Path):
    net = build_q_network(MLPConfig(hidden_sizes=[8]), SPACE, 2)
    path = tmp_path / "checkpoints" / "best.pt"
    save_checkpoint(path, net.state_dict(), CONFIG, env_step=1234, eval_return_mean=99.5)
    payload = load_checkpoint(path)
    assert payload["config"] == CONFIG
    assert payload["env_step"] == 1234 and payload["eval_return_mean"] == 99.5
    clone = build_q_network(MLPConfig(hidden_sizes=[8]), SPACE, 2)
    clone.load_state_dict(payload["model"])
    x = torch.randn(3, 4)
    torch.testing.assert_close(clone(x), net(x))
    # The contract for other tools: plain torch.load with weights_only works.
    assert torch.load(path, weights_only=True)["env_step"] == 1234


def test_write_is_atomic(tmp_path: Path, monkeypatch):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"w": torch.ones(2)}, CONFIG, env_step=1)

    def dies_midway(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(OSError):
        save_checkpoint(path, {"w": torch.zeros(2)}, CONFIG, env_step=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["env_step"] == 1  # the earlier checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary left


class Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_malicious_pickle_is_refused(tmp_path: Path):
    marker = tmp_path / "pwned"
    exploit = Exploit()
    exploit.marker = str(marker)
    path = tmp_path / "evil.pt"
    torch.save({"format": "dqn-checkpoint/1", "model": exploit}, path)
    with pytest.raises(CheckpointError, match="evil.pt") as error:
        load_checkpoint(path)
    assert not marker.exists()
    assert "Unsupported global" in str(error.value) and "weights_only" not in str(error.value)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04broken",
                                     b"env_step,episodes\n300,2\n", b"# dqn\n\nDeep Q"])
def test_corrupt_file_is_refused_with_its_name(tmp_path: Path, content: bytes):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.pt: not a readable dqn checkpoint") as error:
        load_checkpoint(path)
    message = str(error.value)
    assert "\n" not in message and "weights_only" not in message  # no advice to run its code


def test_truncated_checkpoint_is_refused(tmp_path: Path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"w": torch.ones(1000)}, CONFIG, env_step=1)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="last.pt"):
        load_checkpoint(path)


def test_foreign_torch_file_is_refused(tmp_path: Path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="not a dqn checkpoint"):
        load_checkpoint(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pt")
