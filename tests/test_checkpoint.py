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


def test_a_large_training_state_goes_beside_the_checkpoint(tmp_path: Path, monkeypatch):
    import numpy as np

    import dqn.run.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "LARGE", 1 << 20)
    frames = np.arange(3 << 20, dtype=np.uint8).reshape(3, 1 << 20)  # 3 MiB
    state = {"replay": {"frames": frames, "size": 3, "small": np.ones(4)}, "step": 7}
    path = tmp_path / "last.pt"
    checkpoint.save_training_state(path, {"w": torch.ones(1)}, CONFIG, state, env_step=7)
    (folder,) = tmp_path.glob("last.*.arrays")
    assert path.stat().st_size < 100_000  # the frames are beside it, not in it
    loaded = load_checkpoint(path)
    assert loaded["arrays"] == folder.name and loaded["env_step"] == 7
    np.testing.assert_array_equal(loaded["state"]["replay"]["frames"], frames)
    assert torch.equal(loaded["state"]["replay"]["small"], torch.ones(4, dtype=torch.float64))
    # A save that dies while writing the arrays leaves the last checkpoint whole.
    calls = []

    def dies(file, array, **kwargs):
        calls.append(1)
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "save", dies)
    with pytest.raises(OSError):
        checkpoint.save_training_state(path, {"w": torch.zeros(1)}, CONFIG,
                                       {"replay": {"frames": frames * 0}}, env_step=8)
    monkeypatch.undo()
    monkeypatch.setattr(checkpoint, "LARGE", 1 << 20)
    assert calls and {p.name for p in tmp_path.iterdir()} == {"last.pt", folder.name}
    np.testing.assert_array_equal(load_checkpoint(path)["state"]["replay"]["frames"], frames)
    # The next save replaces the folder; the old one goes.
    checkpoint.save_training_state(path, {"w": torch.ones(1)}, CONFIG, state, env_step=9)
    assert len(list(tmp_path.glob("last.*.arrays"))) == 1
    assert load_checkpoint(path)["env_step"] == 9
