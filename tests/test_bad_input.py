"""Every command-line entry point answers a user mistake with one clear line, a non-zero
exit status, no traceback, and nothing trained or written."""

from __future__ import annotations

import pytest

from tests.conftest import REPO, run_python

TRAIN, EVALUATE = ["-m", "dqn.train"], ["-m", "dqn.evaluate"]
COMPARE, PLOT = [str(REPO / "scripts" / "compare.py")], [str(REPO / "scripts" / "plot_run.py")]
SOLVE_RATE = [str(REPO / "scripts" / "solve_rate.py")]

CASES = [
    # (entry point, arguments, words the one line must hold)
    (TRAIN, ["target=sofft"], "Could not find 'target/sofft' (options: hard, none, soft)"),
    (TRAIN, ["buffer.capcity=5"], "Key 'capcity' not in 'UniformBufferConfig'"),
    (TRAIN, ["+buffer.capcity=5"], "unknown key 'buffer.capcity'"),
    (TRAIN, ["seed=abc"], "Value 'abc' of type 'str' could not be converted to Integer"),
    (TRAIN, ["optimizer.amsgrad=maybe"], "'maybe' is not a valid bool"),
    (TRAIN, ["train.gamma=1.5"], "train.gamma=1.5 is out of range: must be in [0, 1]"),
    (TRAIN, ["target=soft", "target.tau=0"], "target.tau=0.0 is out of range"),
    (TRAIN, ["buffer.capacity=10"], "must be >= buffer.batch_size (64)"),
    (TRAIN, ["env.id=NoSuchEnv-v0"], "env.id='NoSuchEnv-v0' cannot be made"),
    (TRAIN, ["env.id=Pendulum-v1"], "DQN needs a Discrete action space"),
    (TRAIN, ["resume=/no/such/run"], "no such run directory"),
    (TRAIN, ["hydra.run.dir=FILE/run"], "cannot be created: Not a directory"),
    (EVALUATE, ["checkpoint=/no/such.pt"], "no such file or directory"),
    (EVALUATE, ["checkpoint=FILE"], "not a readable dqn checkpoint"),
    (EVALUATE, ["checkpoint=FILE", "episodes=many"], "episodes='many' is not valid"),
    (EVALUATE, ["checkpoint=FILE", "episodes=5000000"], "episodes='5000000' is not valid: must "
                                                        "be <= 1,000,000 (the bound of "
                                                        "eval.final_episodes)"),
    (TRAIN, ["eval.episodes=5000000"], "eval.episodes=5000000 is out of range: must be <= "
                                       "1,000,000"),
    (EVALUATE, ["checkpoint=FILE", "epsiodes=5"], "unknown key 'epsiodes'"),
    (EVALUATE, ["checkpoint=FILE", "episodes=5", "episodes=6"],
     "episodes is given twice (episodes=5 and episodes=6)"),
    (COMPARE, ["/no/such/sweep"], "not a directory: /no/such/sweep"),
    (PLOT, ["/no/such/run"], "/no/such/run is not a directory"),
    (SOLVE_RATE, ["--seeds", "abc"], "argument --seeds: invalid int value: 'abc'"),
    (SOLVE_RATE, ["--seeds", "0"], "argument --seeds: must be >= 1, not 0"),
]


@pytest.mark.parametrize("entry,args,words", CASES,
                         ids=[f"{c[0][-1].split('/')[-1]} {' '.join(c[1])}" for c in CASES])
def test_user_mistake_is_one_clear_line(tmp_path, entry, args, words):
    not_a_checkpoint = tmp_path / "notes.txt"
    not_a_checkpoint.write_text("hello")
    args = [a.replace("FILE", str(not_a_checkpoint)) for a in args]
    result = run_python(tmp_path, *entry, *args, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert words in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing written
