"""Each config group's interface (dqn/interfaces.py): every option keeps it, an option that
does not is refused in one line as it is registered, and the config is typed by it."""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass

import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from dqn.config import GROUPS, Config
from dqn.interfaces import INTERFACES, HeadConfig, TargetConfig
from dqn.nets.heads import LinearHead
from dqn.options import ConfigError, groups, option
from dqn.targets import HardTargetConfig


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
