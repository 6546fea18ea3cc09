"""Each config group's interface (dqn/interfaces.py): every option keeps it, an option that
does not is refused in one line as it is registered, and the config is typed by it."""

from __future__ import annotations

import inspect
import json
import shutil
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from dqn.checks import ConfigError
from dqn.config import GROUPS, Config
from dqn.interfaces import INTERFACES, TD_NEEDS, HeadConfig, TargetConfig, TDContext
from dqn.nets.heads import LinearHead, QHead
from dqn.options import groups, option
from dqn.targets import HardTargetConfig
from tests.conftest import REPO, TINY_OVERRIDES, run_python


def test_every_group_has_an_interface_and_types_the_config():
    assert set(INTERFACES) == set(GROUPS)
    types = typing.get_type_hints(Config)
    for group, interface in INTERFACES.items():
        assert types[group] is interface.settings, group


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_keeps_its_groups_interface(group):
    interface = INTERFACES[group]
    behaviour = interface.behaviour_class()
    for name, entry in groups()[group].items():
        assert issubclass(entry.schema, interface.settings), name
        if inspect.isclass(entry.cls):
            assert issubclass(entry.cls, behaviour) and not inspect.isabstract(entry.cls), name
        else:
            assert issubclass(typing.get_type_hints(entry.cls)["return"], behaviour), name


@dataclass
class HalfConfig(HeadConfig):
    pass


def test_a_head_without_a_loss_is_refused_naming_the_method():
    with pytest.raises(ConfigError) as refused:
        @option("head", "half", HalfConfig)
        class HalfHead(LinearHead):
            def q_values(self, output: torch.Tensor) -> torch.Tensor:
                return output
    message = str(refused.value)
    assert "head=half" in message and "Head.loss" in message and "\n" not in message
    assert "half" not in groups()["head"]


def test_a_head_that_needs_what_no_pass_computes_is_refused():
    with pytest.raises(ConfigError) as refused:
        @option("head", "peek", HalfConfig)
        class PeekHead(QHead):
            needs = frozenset({"next_output", "future_rewards"})
    message = str(refused.value)
    assert "head=peek" in message and "'future_rewards'" in message and "\n" not in message


def test_a_td_context_names_the_need_a_head_did_not_declare():
    context = TDContext(online=torch.zeros(1, 2, 3), returns=None)
    with pytest.raises(AttributeError, match="TDContext.target_at_s was not computed: a head "
                                             "that reads it lists 'target_at_s' in its"):
        context.target_at_s
    assert set(TD_NEEDS) == {"next_output", "next_actions", "target_next", "online_next",
                             "target_at_s"}


def test_a_schema_of_another_group_is_refused():
    with pytest.raises(ConfigError, match=r"head=stray .* must extend HeadConfig"):
        @option("head", "stray", HardTargetConfig)
        class StrayHead(LinearHead):
            pass


def test_an_option_that_is_not_its_groups_kind_is_refused():
    @dataclass
    class EveryStep(TargetConfig):
        pass

    with pytest.raises(ConfigError, match=r"target=every_step .* must subclass TargetUpdate"):
        @option("target", "every_step", EveryStep)
        class EveryStepUpdate:
            def __call__(self, online, target, gradient_steps):
                target.load_state_dict(online.state_dict())


def test_an_optimizer_function_must_say_it_returns_an_optimizer():
    from dqn.optim import AdamConfig

    with pytest.raises(ConfigError, match=r"optimizer=sgd .* be annotated to return Optimizer"):
        @option("optimizer", "sgd", AdamConfig)
        def sgd(cfg, params):
            return torch.optim.SGD(params, lr=cfg.lr)


def test_a_group_holds_only_its_own_settings():
    config = OmegaConf.structured(Config)
    with pytest.raises(ValidationError, match="not a subclass of HeadConfig"):
        OmegaConf.merge(config, {"head": OmegaConf.structured(HardTargetConfig)})


COIN_MODULE = '''
from dataclasses import dataclass

import numpy as np

from dqn.interfaces import ActionValues, Exploration, ExplorationConfig, ExplorationContext
from dqn.checks import within
from dqn.options import option


@dataclass
class CoinConfig(ExplorationConfig):
    p_first: float = 0.3  # probability of action 0 instead of the greedy one

    def check(self) -> None:
        within("exploration.p_first", self.p_first, 0, 1)


@option("exploration", "coin", CoinConfig)
class Coin(Exploration):
    def __init__(self, cfg: CoinConfig, context: ExplorationContext) -> None:
        self.p_first = cfg.p_first

    def select(self, values: ActionValues, step: int, episodes: int,
               rng: np.random.Generator) -> np.ndarray:
        actions = np.array(values.greedy(), dtype=np.int64)
        actions[rng.random(values.envs) < self.p_first] = 0
        return actions
{scalars}'''
COIN_SCALARS = '''
    def scalars(self, step: int, episodes: int) -> dict[str, float]:
        return {"p_first": self.p_first}
'''
COIN_YAML = """# a toy option written by following the README's recipe
defaults:
  - /schema/exploration/coin@_here_
  - _self_
p_first: 0.3              # probability of action 0 instead of the greedy one
"""


def checkout_with_coin(tmp_path: Path, scalars: str) -> Path:
    """A copy of this checkout's package and conf/ with exploration=coin added as the
    README's "Adding an option" says: one module, one YAML, nothing else edited."""
    copy = tmp_path / "checkout"
    for part in ("dqn", "conf"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "dqn" / "coin.py").write_text(COIN_MODULE.format(scalars=scalars))
    (copy / "conf" / "exploration" / "coin.yaml").write_text(COIN_YAML)
    return copy


def test_an_option_added_as_the_readme_says_trains_and_logs_its_parameter(tmp_path):
    copy = checkout_with_coin(tmp_path, COIN_SCALARS)
    (tmp_path / "work").mkdir()
    run = tmp_path / "work" / "run"
    done = run_python(tmp_path / "work", "-m", "dqn.train", "exploration=coin",
                      "exploration.p_first=0.2", *TINY_OVERRIDES, "logger=none",
                      f"hydra.run.dir={run}", env={"PYTHONPATH": str(copy)})
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "p_first" in header and "epsilon" not in header


def test_an_option_missing_a_method_is_refused_in_one_line(tmp_path):
    copy = checkout_with_coin(tmp_path, scalars="")
    (tmp_path / "work").mkdir()
    refused = run_python(tmp_path / "work", "-m", "dqn.train", "exploration=coin",
                         env={"PYTHONPATH": str(copy)})
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert "exploration=coin (dqn.coin.Coin) does not implement Exploration.scalars" in lines[0]
    assert list((tmp_path / "work").iterdir()) == []
