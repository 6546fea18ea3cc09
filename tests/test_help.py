"""`python -m dqn.train --help`: every key with its meaning, the groups' options with their
purposes, the launchers and their keys, fast and without torch, one line for a mistake."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from dqn.cli import help as dqn_help
from dqn.cli.conf import CONF_DIR, HELP_GROUPS
from dqn.cli.train import _help
from tests.conftest import REPO, compose_config, run_python

NOT_A_SETTING = "not a setting of this config"
KEY_LINE = re.compile(r"^( *)([\w.]+): ?(.*?)(?:\s+# (.*))?$")


def section(text: str, start: str, end: str) -> str:
    """The lines between the heading that starts with `start` and the one with `end`."""
    return text.split(start, 1)[1].split("\n", 1)[1].split(end, 1)[0]


def shown_keys(text: str) -> dict[str, str]:
    """The dotted keys of a `key: value  # meaning` listing, each with its meaning (its
    wrapped lines joined)."""
    keys: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last = None
    for line in text.splitlines():
        if line.strip().startswith("# ") and last:
            keys[last] += " " + line.strip()[2:]
            continue
        match = KEY_LINE.match(line)
        if match is None:
            continue
        indent, key, _, meaning = match.groups()
        while stack and stack[-1][0] >= len(indent):
            stack.pop()
        stack.append((len(indent), key))
        last = ".".join(name for _, name in stack)
        keys[last] = meaning or ""
    return keys


def flat_keys(node: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in node.items():
        keys.add(f"{prefix}{key}")
        if isinstance(value, dict):
            keys |= flat_keys(value, f"{prefix}{key}.")
    return keys


@pytest.mark.parametrize("overrides,env", [
    ([], "cartpole"), (["env=atari"], "atari"), (["buffer=prioritized"], "cartpole"),
    (["experiment=pqn_minatar"], "minatar"), (["rainbow=full"], "cartpole"),
    (["logger=none", "target=soft", "optimizer=rmsprop"], "cartpole")])
def test_every_key_of_the_composed_config_is_shown_with_its_meaning(overrides, env):
    text = _help(overrides)
    shown = shown_keys(section(text, "== Config of this command", "== Sweeps"))
    composed = OmegaConf.to_container(compose_config(*overrides))
    assert set(shown) == flat_keys(composed)
    unexplained = [key for key, meaning in shown.items()
                   if not meaning or NOT_A_SETTING in meaning]
    assert not unexplained, f"keys without a meaning: {unexplained}"
    assert shown["env"].endswith(f"(env={env})")  # a group's heading names its option


def test_a_key_and_its_value_and_meaning_share_a_line():
    text = _help(["experiment=pqn_minatar"])
    assert re.search(r"^  lr: 0\.0005 +# learning rate", text, re.MULTILINE)
    assert re.search(r"^  num_envs: 128 +# training envs per agent", text, re.MULTILINE)


def test_a_key_no_schema_knows_is_shown_as_refused():
    shown = shown_keys(_help(["+network.widht=3"]))
    assert NOT_A_SETTING in shown["network.widht"]


def test_every_group_and_option_is_listed_with_its_purpose_and_the_default_marked():
    groups = section(_help([]), "== Config groups", "== Config of this command")
    listed: dict[str, dict[str, str]] = {}
    for line in groups.splitlines():
        if line and not line.startswith(" "):
            current = listed.setdefault(line.split(":")[0], {})
        elif line.strip():
            mark, name, purpose = re.match(r"^  ([* ]) (\w+) +(.*)$", line).groups()
            current[("*" if mark == "*" else "") + name] = purpose
    for group in HELP_GROUPS:
        if group == "sweep":
            continue
        options = {name.lstrip("*") for name in listed[group]}
        assert options == {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
        assert all(listed[group].values()), f"{group}: an option without a purpose"
    assert "*mlp" in listed["network"] and "*cartpole" in listed["env"]
    assert not any(name.startswith("*") for name in listed["experiment"])


def test_the_launchers_and_their_keys_are_listed():
    sweeps = section(_help(["hydra/launcher=joblib"]), "== Sweeps", "Sweep presets")
    for name in ("basic", "joblib", "cluster", "ray"):
        assert re.search(rf"^[* ] {name} +\S", sweeps, re.MULTILINE), name
    assert re.search(r"^\* joblib ", sweeps, re.MULTILINE)  # the one this command uses
    assert "hydra/launcher=NAME" in sweeps and "hydra.launcher.KEY=VALUE" in sweeps
    for name in ("cluster", "ray"):
        path = CONF_DIR / "hydra" / "launcher" / f"{name}.yaml"
        after = sweeps.split(f"conf/hydra/launcher/{name}.yaml:\n", 1)[1].splitlines()
        listing = "\n".join(line.strip() for line in after[:next(
            i for i, line in enumerate(after + [""]) if not line.startswith("        "))])
        node = OmegaConf.load(path)
        leaves = {key for key in flat_keys(OmegaConf.to_container(node))
                  if not OmegaConf.is_dict(OmegaConf.select(node, key))
                  or not OmegaConf.select(node, key)} - {"defaults", "_target_"}
        shown = shown_keys(listing)
        assert set(shown) == leaves
        assert all(shown.values()), f"{path}: a key without a meaning"


def test_the_sweep_presets_and_the_footer_are_shown():
    text = _help([])
    presets = section(text, "Sweep presets", "\n\n")
    for path in (CONF_DIR / "sweep").glob("*.yaml"):
        assert re.search(rf"^  {path.stem} +\S", presets, re.MULTILINE), path.stem
    for said in ("python -m dqn.train -m", "resume=outputs/runs/", "python -m dqn.evaluate",
                 "swanlab watch outputs/swanlog", "Exit codes: 0", "2 a usage or config error",
                 "1 a failure while running", "128+N"):
        assert said in text


def test_a_launcher_that_is_not_installed_says_which_extra_installs_it(monkeypatch):
    missing = dqn_help.Launcher("ray", "", ("no_such_module_for_the_test",), "ray")
    monkeypatch.setattr(dqn_help, "LAUNCHERS", (*dqn_help.LAUNCHERS[:-1], missing))
    assert re.search(r'^  ray +not installed: pip install -e "\.\[ray\]"', _help([]),
                     re.MULTILINE)


def test_help_of_a_sweep_shows_the_config_of_its_fixed_overrides():
    text = _help(["-m", "seed=3,4", "target=soft"])
    assert re.search(r"^  tau: 0\.005 ", text, re.MULTILINE)
    assert "config above leaves them out): seed=3,4" in text


@pytest.mark.parametrize("overrides,said", [
    (["foo=1"], "'foo'"),
    (["env=bogus"], "acrobot, atari, cartpole"),
    (["seed=0,1"], "add -m"),
    (["optimizer=0.001"], "optimizer is a config group"),
    (["seed=abc"], "seed=abc"),
])
def test_help_with_a_mistake_answers_in_one_line(overrides, said, capsys):
    with pytest.raises(SystemExit) as stopped:
        _help(overrides)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Config error: ") and err.count("\n") == 1 and said in err


def test_help_answers_fast_without_torch_and_a_mistake_in_one_line(tmp_path):
    script = f"""
import sys, time
start = time.perf_counter()
sys.path.insert(0, {str(REPO)!r})
from dqn.cli.train import cli
cli(["env=atari", "--help"])
assert "torch" not in sys.modules, "--help imported torch"
assert "gymnasium" not in sys.modules, "--help imported gymnasium"
print(f"seconds={{time.perf_counter() - start:.2f}}")
"""
    result = run_python(tmp_path, "-c", script)
    assert result.returncode == 0, result.stderr
    assert "repeat_action_probability: 0.25" in result.stdout
    assert float(result.stdout.rsplit("seconds=", 1)[1]) < 5
    wrong = run_python(tmp_path, "-m", "dqn.train", "foo=1", "--help")
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert wrong.stderr.startswith("Config error: ") and wrong.stderr.count("\n") == 1
    assert not (tmp_path / "outputs").exists()
