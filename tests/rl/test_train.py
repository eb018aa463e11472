"""rl.train: exact resume (population optimizer and PPO), outputs (CSV columns, policy file,
GIF), the evaluate command, the CLI and bad input."""

import math
import os

import numpy as np
import pytest
import torch

from rl.checkpoint import load_checkpoint
from rl.train import COLUMNS, evaluate, load_policy, read_csv, render_gif, train

SMALL_PPO = dict(num_steps=16, num_minibatches=2, update_epochs=2)


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def _stop_at(n):
    return lambda row: row["iteration"] >= n


@pytest.mark.parametrize("optimizer,kwargs", [
    ("pgpe", dict(policy="linear", popsize=10, iterations=6)),
    ("ppo", dict(policy="mlp", hidden=(16,), num_envs=4, iterations=6, algo_kwargs=SMALL_PPO)),
])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, optimizer, kwargs):
    common = dict(optimizer=optimizer, seed=3, eval_every=2, eval_episodes=3, checkpoint_every=2,
                  progress=False, plot=False, **kwargs)
    full = train("CartPole-v1", run_dir=str(tmp_path / "full"), **common)
    # stopped at 5, between checkpoints (every 2): PPO resumes from its checkpoint at 4
    # (its envs are reset there), PGPE from 5 (saved when stopped); both must end exactly as the
    # uninterrupted run
    part = train("CartPole-v1", run_dir=str(tmp_path / "part"), callback=_stop_at(5), **common)
    assert len(part.history) == 5
    ck = load_checkpoint(str(tmp_path / "part" / "checkpoint.pt"))
    assert len(ck["history"]) == (4 if optimizer == "ppo" else 5)
    resumed = train("CartPole-v1", run_dir=str(tmp_path / "part"), resume=True, **common)
    np.testing.assert_equal(_strip(resumed.history), _strip(full.history))
    for p, q in zip(full.policy.state_dict().values(), resumed.policy.state_dict().values()):
        assert torch.equal(p, q)
    # the CSV of the resumed run is the uninterrupted one's
    np.testing.assert_equal(_strip(read_csv(str(tmp_path / "part" / "metrics.csv"))),
                            _strip(read_csv(str(tmp_path / "full" / "metrics.csv"))))


def test_outputs_and_saved_policy(tmp_path):
    run = str(tmp_path / "run")
    res = train("CartPole-v1", optimizer="pgpe", policy="linear", popsize=10, iterations=3,
                eval_every=3, eval_episodes=4, eval_seed=50, seed=1, run_dir=run, progress=False)
    with open(os.path.join(run, "metrics.csv")) as f:
        assert f.readline().strip().split(",") == list(COLUMNS)
    rows = read_csv(os.path.join(run, "metrics.csv"))
    assert [r["iteration"] for r in rows] == [1.0, 2.0, 3.0]
    assert math.isnan(rows[0]["eval_return"]) and rows[2]["eval_return"] == res.final_eval
    assert rows[-1]["env_steps"] > rows[0]["env_steps"] > 0
    assert os.path.exists(os.path.join(run, "curve.png"))
    # the saved policy (with its normaliser) evaluates to the same returns as in training
    policy, spec = load_policy(os.path.join(run, "policy.pt"))
    assert spec["kind"] == "linear" and spec["obs_norm"] is True
    assert torch.equal(policy.obs_norm.mean, res.policy.obs_norm.mean)
    returns = evaluate(os.path.join(run, "policy.pt"), episodes=4, seed=50)
    assert float(np.mean(returns)) == res.final_eval


def test_ars_policy_settings_are_saved_with_the_policy(tmp_path):
    """ARS's setup (no bias, raw actions, ARS's filter) from the CLI: trained, saved, and
    rebuilt by load_policy with the same settings and the same returns."""
    from evoopt.cli import main

    run = str(tmp_path / "ars")
    assert main(["train", "Pendulum-v1", "--optimizer", "ars", "--policy", "linear",
                 "--popsize", "4", "--iterations", "2", "--eval-every", "2", "--eval-episodes", "2",
                 "--run-dir", run, "--no-progress", "--no-bias", "--squash", "none",
                 "--obs-norm-rule", "ars"]) == 0
    policy, spec = load_policy(os.path.join(run, "policy.pt"))
    assert (spec["policy_kwargs"] == {"bias": False, "squash": "none"}
            and spec["obs_std_rule"] == "ars")
    assert (policy.layers[0].bias is None and policy.squash == "none"
            and policy.obs_norm.std_rule == "ars")
    assert float(policy.obs_norm.count) > 0
    rows = read_csv(os.path.join(run, "metrics.csv"))
    assert (float(np.mean(evaluate(os.path.join(run, "policy.pt"), episodes=2, seed=1_000_000)))
            == rows[-1]["eval_return"])
    with pytest.raises(ValueError, match=r"Invalid policy_kwargs: \['hidden'\]"):
        train("Pendulum-v1", optimizer="ars", iterations=1, policy_kwargs={"hidden": (3,)},
              progress=False)
    with pytest.raises(ValueError, match="Invalid obs_std_rule: 'none'"):
        train("Pendulum-v1", optimizer="ars", iterations=1, obs_std_rule="none",
              progress=False)


def test_evaluate_writes_a_gif(tmp_path):
    from PIL import Image

    run = str(tmp_path / "run")
    train("CartPole-v1", optimizer="ppo", policy="mlp", hidden=(8,), num_envs=2, iterations=1,
          algo_kwargs=dict(num_steps=8), run_dir=run, progress=False, plot=False)
    gif = str(tmp_path / "cartpole.gif")
    returns = evaluate(os.path.join(run, "policy.pt"), episodes=1, seed=7, gif=gif)
    policy, _ = load_policy(os.path.join(run, "policy.pt"))
    n = render_gif(policy, "CartPole-v1", str(tmp_path / "again.gif"), seed=7)
    assert n == int(returns[0]) + 1  # the reset frame and one per step of the evaluated episode
    with Image.open(gif) as im:
        assert im.size == (600, 400) and im.n_frames >= n // 2  # GIF writers merge identical frames


def test_cli_train_and_evaluate(tmp_path, capsys):
    from evoopt.cli import main

    run = str(tmp_path / "cli")
    rc = main(["train", "CartPole-v1", "--optimizer", "reinforce", "--policy", "linear",
               "--iterations", "2", "--eval-every", "1", "--eval-episodes", "2", "--run-dir", run,
               "--no-progress"])
    assert rc == 0
    assert "reinforce on CartPole-v1: 2 iterations" in capsys.readouterr().out
    assert main(["evaluate", os.path.join(run, "policy.pt"), "--episodes", "3"]) == 0
    assert "return over 3 episodes" in capsys.readouterr().out
    assert main(["train", "CartPole-v1", "--optimizer", "nope", "--iterations", "1"]) == 2
    assert "Invalid optimizer: 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs,match", [
    (dict(iterations=0), "Invalid iterations: 0"),
    (dict(iterations=1, optimizer="adamw"),
     r"Invalid optimizer: 'adamw' \(expected one of \[.*'ppo'"),
    (dict(iterations=1, policy="cnn"), "Invalid policy: 'cnn'"),
    (dict(iterations=1, resume=True), "Invalid resume: True needs run_dir"),
    (dict(iterations=1, eval_every=0), "Invalid eval_every: 0"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train("CartPole-v1", progress=False, **kwargs)


def test_bad_env_id_and_mismatched_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="CartPole"):
        train("CartPol-v1", iterations=1, progress=False)
    run = str(tmp_path / "r")
    train("CartPole-v1", optimizer="pgpe", policy="linear", popsize=4, iterations=1, run_dir=run,
          progress=False, plot=False)
    with pytest.raises(ValueError, match="Invalid checkpoint: .* does not match this run "
                                         ".*policy: saved "
                                         "'LinearPolicy', expected 'MLPPolicy'"):
        train("CartPole-v1", optimizer="pgpe", policy="mlp", popsize=4, iterations=2, run_dir=run,
              resume=True, progress=False)


PGPE_SMALL = dict(optimizer="pgpe", policy="linear", popsize=10, seed=3, eval_every=2,
                  eval_episodes=3, checkpoint_every=1, progress=False, plot=False)


def test_corrupted_checkpoint_falls_back_to_the_previous_good_one(tmp_path):
    run = str(tmp_path / "run")
    full = train("CartPole-v1", iterations=5, run_dir=str(tmp_path / "full"), **PGPE_SMALL)
    train("CartPole-v1", iterations=5, run_dir=run, callback=_stop_at(3), **PGPE_SMALL)
    ck = os.path.join(run, "checkpoint.pt")
    assert os.path.exists(ck + ".prev")  # the checkpoint of iteration 2
    with open(ck, "r+b") as f:  # a crash that left garbage in the newest file
        f.seek(100)
        f.write(b"\x00garbage\x00" * 8)
    with pytest.warns(RuntimeWarning, match="loading the previous good checkpoint"):
        resumed = train("CartPole-v1", iterations=5, run_dir=run, resume=True, **PGPE_SMALL)
    np.testing.assert_equal(_strip(resumed.history), _strip(full.history))


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    run = str(tmp_path / "run")
    train("CartPole-v1", iterations=2, run_dir=run, **PGPE_SMALL)
    with pytest.raises(ValueError, match="popsize"):
        train("CartPole-v1", iterations=4, run_dir=run, resume=True,
              **{**PGPE_SMALL, "popsize": 12})
    assert os.path.exists(os.path.join(run, "checkpoint.pt"))  # the good one is kept


SCRIPT = """
import os, sys, torch
torch.set_num_threads(1)
from rl.train import train
marker = sys.argv[2]
def slow(row):
    if row["iteration"] == 3:
        open(marker, "w").close()  # tell the parent we are mid-run
        import time; time.sleep(60)  # and wait to be killed
train("CartPole-v1", iterations=6, run_dir=sys.argv[1], optimizer="pgpe", policy="linear",
      popsize=10, seed=3, eval_every=2, eval_episodes=3, checkpoint_every=1, progress=False,
      plot=False, callback=slow)
"""


def test_sigkill_mid_run_then_cli_resume_reproduces_the_uninterrupted_run(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    full = train("CartPole-v1", iterations=6, run_dir=str(tmp_path / "full"), **PGPE_SMALL)
    run, marker = str(tmp_path / "run"), str(tmp_path / "marker")
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, run, marker], env=env)
    deadline = time.time() + 120
    while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert os.path.exists(marker), "the child never reached iteration 3"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # 3 was not saved
    assert len(load_checkpoint(os.path.join(run, "checkpoint.pt"))["history"]) == 2
    cmd = [sys.executable, "-m", "evoopt.cli", "train", "CartPole-v1", "--optimizer", "pgpe",
           "--policy", "linear", "--popsize", "10", "--seed", "3", "--iterations", "6",
           "--eval-every", "2", "--eval-episodes", "3", "--checkpoint-every", "1", "--run-dir", run,
           "--resume", "--no-progress"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    np.testing.assert_equal(_strip(read_csv(os.path.join(run, "metrics.csv"))),
                            _strip(read_csv(str(tmp_path / "full" / "metrics.csv"))))
    policy, _ = load_policy(os.path.join(run, "policy.pt"))
    for p, q in zip(full.policy.state_dict().values(), policy.state_dict().values()):
        assert torch.equal(p, q)
