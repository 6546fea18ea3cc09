"""The shape of the package: options registered in one place, one YAML each; the core built
and run from plain Python without Hydra; no import cycles."""

from __future__ import annotations

from dataclasses import fields

from omegaconf import OmegaConf

from dqn.cli.conf import CONF_DIR
from dqn.config import GROUPS
from dqn.options import options
from tests.conftest import REPO, run_python


def test_every_yaml_option_extends_a_registered_schema():
    for group in GROUPS:
        registered = options(group)
        for path in (CONF_DIR / group).glob("*.yaml"):
            defaults = OmegaConf.load(path)["defaults"]
            schema = next(d for d in defaults if str(d).startswith("/schema/"))
            name = schema.removeprefix(f"/schema/{group}/").removesuffix("@_here_")
            assert name in registered, f"{path} extends {schema}, which no option registers"


def test_the_core_trains_from_plain_python_without_hydra(tmp_path):
    script = f"""
import sys
from pathlib import Path
from dqn.config import Config, TrainConfig, EvalConfig, stored_config
from dqn.envs.make import GymEnvConfig
from dqn.exploration import LinearExplorationConfig
from dqn.loop import train
from dqn.nets.encoders import MLPConfig
from dqn.nets.heads import QConfig
from dqn.optim import AdamConfig
from dqn.replay.uniform import UniformBufferConfig
from dqn.run.tracking import NoLoggerConfig
from dqn.targets import HardTargetConfig

config = Config(network=MLPConfig(hidden_sizes=[16]), head=QConfig(), env=GymEnvConfig(),
                buffer=UniformBufferConfig(capacity=1000, learning_starts=100),
                exploration=LinearExplorationConfig(steps=300), target=HardTargetConfig(),
                optimizer=AdamConfig(), logger=NoLoggerConfig(),
                train=TrainConfig(total_steps=400, train_frequency=4, gradient_steps=1),
                eval=EvalConfig(every_steps=200, episodes=2, final_episodes=3))
config.check()
final = train(config, Path({str(tmp_path)!r}), "plain", stored_config(config))
assert "hydra" not in sys.modules, "the core imported Hydra"
print("final", final)
"""
    result = run_python(tmp_path, "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("final ")
    assert (tmp_path / "checkpoints" / "best.pt").is_file()


def test_every_module_imports_first_without_cycles(tmp_path):
    """Each module imported on its own, before any other module of the package (in a
    process of its own): an import cycle shows up as an ImportError for some first module."""
    script = """
import importlib, pkgutil, sys
import dqn
names = [m.name for m in pkgutil.walk_packages(dqn.__path__, "dqn.")]
for name in names:
    for loaded in [m for m in sys.modules if m == "dqn" or m.startswith("dqn.")]:
        del sys.modules[loaded]
    importlib.import_module(name)
print(len(names), "modules")
"""
    result = run_python(tmp_path, "-c", script)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[0]) > 20


def test_the_package_holds_no_hydra_outside_the_command_line_layer():
    for path in (REPO / "dqn").rglob("*.py"):
        if "cli" in path.relative_to(REPO / "dqn").parts:
            continue
        text = path.read_text()
        assert "import hydra" not in text and "from hydra" not in text, path


def test_every_yaml_option_lists_every_key_of_its_schema():
    """--help prints the YAML files' values (it does not import the options), so each
    YAML must show every setting of its option."""
    for group in GROUPS:
        for path in (CONF_DIR / group).glob("*.yaml"):
            node = OmegaConf.load(path)
            schema = next(d for d in node["defaults"] if str(d).startswith("/schema/"))
            name = schema.removeprefix(f"/schema/{group}/").removesuffix("@_here_")
            keys = {f.name for f in fields(options(group)[name].schema)}
            missing = keys - set(node.keys())
            assert not missing, f"{path} does not list {sorted(missing)}"


def test_help_and_a_training_run_import_what_they_need_only(tmp_path):
    """--help answers without importing torch; training never imports torch._dynamo (its
    import costs seconds; dqn.fastpath builds the optimizer around it)."""
    script = """
import sys
from dqn.cli.train import cli
cli(["--help"])
assert "torch" not in sys.modules, "--help imported torch"
from dqn.config import validate, stored_config
from dqn.loop import train
from tests.conftest import compose_config
from pathlib import Path
cfg = compose_config("logger=none", "train.total_steps=300", "buffer.learning_starts=100",
                     "train.train_frequency=4", "eval.every_steps=150", "eval.episodes=2",
                     "eval.final_episodes=2", "train.checkpoint_every=200")
config = validate(cfg)
train(config, Path(sys.argv[1]), "run", stored_config(config))
assert "torch._dynamo" not in sys.modules, "training imported torch._dynamo"
print("ok")
"""
    result = run_python(REPO, "-c", script, str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
