"""evoopt train's settings: presets under the user's arguments (every preset key), zero and
negative values refused, K=V values as Python literals, settings that do not apply refused,
and a resume that must match the saved run (config.json never says what did not run)."""

import functools
import json
import os
import re

import pytest

import evoopt
from evoopt.cli import main
from rl import defaults
from rl.cli import _kv
from rl.config import DEFAULT_BUDGET, make_config
from rl.train import train

FAST = ["--iterations", "1", "--eval-episodes", "1", "--no-progress"]


# ----------------------------------------------------------------- presets and user arguments
FULL_PRESET = dict(
    policy="linear", hidden=(7,), lr=0.3, popsize=6, obs_norm=False, obs_std_rule="ars",
    policy_kwargs=dict(bias=False), optimizer_kwargs=dict(sigma=0.5, sigma_lr=0.05),
    rollout_kwargs=dict(num_episodes=2), total_timesteps=5_000, iterations=3, target_return=123.0)
GRAD_PRESET = dict(num_envs=3, grad_optimizer="sgd", algo_kwargs=dict(max_steps=500, gamma=0.9),
                   optimizer_kwargs=dict(momentum=0.5), lr=0.02, total_timesteps=4_000)


@pytest.fixture(autouse=True)
def table(monkeypatch):
    """The tests' own entries for Acrobot-v1 (whatever the real table holds for it)."""
    for key in [k for k in defaults.PRESETS if k[0] == "Acrobot-v1"]:
        monkeypatch.delitem(defaults.PRESETS, key)
    monkeypatch.delitem(defaults.DEFAULT_OPTIMIZER, "Acrobot-v1", raising=False)


@pytest.fixture
def presets(monkeypatch):
    monkeypatch.setitem(defaults.PRESETS, ("Acrobot-v1", "snes"), FULL_PRESET)
    monkeypatch.setitem(defaults.PRESETS, ("Acrobot-v1", "reinforce"), GRAD_PRESET)
    monkeypatch.setitem(defaults.DEFAULT_OPTIMIZER, "Acrobot-v1", "snes")


def test_every_preset_key_is_applied(presets):
    cfg = make_config("Acrobot-v1")
    assert cfg.optimizer == "snes" and cfg.sources["optimizer"] == "preset"
    assert (cfg.policy, cfg.hidden, cfg.lr, cfg.popsize) == ("linear", (7,), 0.3, 6)
    assert (cfg.obs_norm, cfg.obs_std_rule, cfg.policy_kwargs) == (False, "ars", {"bias": False})
    assert cfg.optimizer_kwargs == {"sigma": 0.5, "sigma_lr": 0.05}
    assert cfg.rollout_kwargs == {"num_episodes": 2}
    assert (cfg.total_timesteps, cfg.iterations, cfg.target_return) == (5_000, 3, 123.0)
    g = make_config("Acrobot-v1", optimizer="reinforce")
    assert (g.num_envs, g.grad_optimizer, g.lr) == (3, "sgd", 0.02)
    assert g.algo_kwargs == {"max_steps": 500, "gamma": 0.9}
    assert g.optimizer_kwargs == {"momentum": 0.5}
    assert (g.total_timesteps, g.iterations) == (4_000, None)


@pytest.mark.parametrize("user, field, value", [
    (dict(policy="mlp"), "policy", "mlp"),
    (dict(policy="mlp", hidden=(3, 3)), "hidden", (3, 3)),
    (dict(lr=0.01), "lr", 0.01),
    (dict(optimizer_kwargs={"lr": 0.01}), "lr", 0.01),
    (dict(popsize=8), "popsize", 8),
    (dict(obs_norm=True), "obs_norm", True),
    (dict(obs_norm=True, obs_std_rule="floor"), "obs_std_rule", "floor"),
    (dict(policy_kwargs={"squash": "tanh"}), "policy_kwargs", {"bias": False, "squash": "tanh"}),
    (dict(policy_kwargs={"bias": True}), "policy_kwargs", {"bias": True}),
    (dict(optimizer_kwargs={"sigma_lr": 0.1}), "optimizer_kwargs", {"sigma": 0.5, "sigma_lr": 0.1}),
    (dict(rollout_kwargs={"num_episodes": 1}), "rollout_kwargs", {"num_episodes": 1}),
    (dict(iterations=2), "total_timesteps", None),  # the user's budget replaces the preset's
    (dict(total_timesteps=100), "iterations", None),
    (dict(target_return=10.0), "target_return", 10.0),
])
def test_the_users_arguments_win_over_the_preset(presets, user, field, value):
    assert getattr(make_config("Acrobot-v1", **user), field) == value


def test_a_users_key_drops_the_presets_key_of_the_same_meaning(monkeypatch):
    """A preset's radius_init yields to a user's sigma (and a preset's sigma to radius_init)."""
    monkeypatch.setitem(defaults.PRESETS, ("Acrobot-v1", "pgpe"),
                        dict(optimizer_kwargs=dict(radius_init=2.25, stdev_lr=0.2)))
    kw = make_config("Acrobot-v1", optimizer_kwargs={"sigma": 0.05}).optimizer_kwargs
    assert kw == {"stdev_lr": 0.2, "sigma": 0.05}
    monkeypatch.setitem(defaults.PRESETS, ("Acrobot-v1", "pgpe"),
                        dict(optimizer_kwargs=dict(sigma=1.0)))
    kw = make_config("Acrobot-v1", optimizer_kwargs={"radius_init": None}).optimizer_kwargs
    assert kw == {"radius_init": None}


@pytest.mark.parametrize("env_id, optimizer", sorted(defaults.PRESETS))
def test_every_preset_of_the_table_resolves(env_id, optimizer):
    """Each entry of rl/defaults.py is a valid config (keys, optimizer arguments, budget)."""
    cfg = make_config(env_id, optimizer=optimizer)
    assert cfg.optimizer == optimizer
    assert cfg.total_timesteps is not None or cfg.iterations is not None


def test_the_default_optimizer_of_each_env_is_used_without_optimizer():
    for env_id, name in defaults.DEFAULT_OPTIMIZER.items():
        assert make_config(env_id).optimizer == name
    assert make_config("Acrobot-v1").optimizer == "pgpe"  # no entry: the fallback


def test_a_preset_with_an_unknown_key_is_refused(monkeypatch):
    monkeypatch.setitem(defaults.PRESETS, ("Acrobot-v1", "pgpe"), dict(popsze=8))
    with pytest.raises(ValueError, match=re.escape("Invalid preset for ('Acrobot-v1', 'pgpe'): "
                                                   "unknown keys ['popsze'] (expected some of")):
        make_config("Acrobot-v1")


def test_generic_defaults_without_a_preset():
    cfg = make_config("Acrobot-v1")
    assert (cfg.optimizer, cfg.policy, cfg.popsize, cfg.hidden) == ("pgpe", "mlp", 50, (64, 64))
    assert (cfg.total_timesteps, cfg.iterations) == (DEFAULT_BUDGET["total_timesteps"], None)
    assert cfg.sources["budget"] == "default"
    assert make_config("Acrobot-v1", optimizer="ppo").num_envs == 8


def test_optimizer_kwargs_sigma_over_the_cartpole_preset_runs(tmp_path, capsys):
    """Issue 12: 'Invalid sigma=0.05 with radius_init=2.25' although the user never gave it."""
    run = tmp_path / "run"
    rc = main(["train", "CartPole-v1", "--optimizer", "pgpe", "--optimizer-kwargs", "sigma=0.05",
               "--popsize", "4", "--run-dir", str(run), *FAST])
    assert rc == 0, capsys.readouterr().err
    kw = json.loads((run / "config.json").read_text())["optimizer_kwargs"]
    assert kw["sigma"] == 0.05 and "radius_init" not in kw
    preset = defaults.PRESETS.get(("CartPole-v1", "pgpe"), {}).get("optimizer_kwargs", {})
    assert set(kw) == (set(preset) - {"radius_init", "lr"}) | {"sigma"}


def test_kv_values_are_python_literals():
    assert _kv("radius_init=None,sigma=0.05,betas=(0.9, 0.99),name=adam,flag=True,n=3") == {
        "radius_init": None, "sigma": 0.05, "betas": (0.9, 0.99), "name": "adam", "flag": True,
        "n": 3}
    assert _kv("hidden=[64,64],d={'a': 1}") == {"hidden": [64, 64], "d": {"a": 1}}


# -------------------------------------------------------------------------- bad values
@pytest.mark.parametrize("args, match", [
    (["--popsize", "0"], "argument --popsize: invalid value '0' (expected an integer >= 1)"),
    (["--popsize", "-3"], "argument --popsize: invalid value '-3'"),
    (["--num-envs", "0"], "argument --num-envs: invalid value '0'"),
    (["--ray-actors", "0"], "argument --ray-actors: invalid value '0'"),
    (["--threads", "0"], "argument --threads: invalid value '0'"),
    (["--iterations", "0"], "argument --iterations: invalid value '0'"),
    (["--timesteps", "0"], "argument --timesteps: invalid value '0'"),
    (["--eval-every", "0"], "argument --eval-every: invalid value '0'"),
    (["--eval-episodes", "0"], "argument --eval-episodes: invalid value '0'"),
    (["--checkpoint-every", "0"], "argument --checkpoint-every: invalid value '0'"),
    (["--seed", "-1"], "argument --seed: invalid value '-1' (expected an integer >= 0)"),
    (["--hidden", "0"], "argument --hidden: expected widths >= 1"),
    (["--optimizer-kwargs", "sigma"],
     "argument --optimizer-kwargs: expected key=value, got 'sigma'"),
    # unknown keys: the valid ones listed, as `compare` does
    (["--optimizer", "pgpe", "--optimizer-kwargs", "sigmaa=0.1"],
     "Invalid optimizer_kwargs for 'pgpe': ['sigmaa'] (expected some of: lr, sigma, radius_init"),
    (["--optimizer", "ppo", "--optimizer-kwargs", "nope=1"],
     "Invalid optimizer_kwargs for 'adam': ['nope'] (expected some of: lr, betas"),
    (["--optimizer", "ppo", "--algo-kwargs", "gama=0.9"],
     "Invalid algo_kwargs for 'ppo': ['gama'] (expected some of: num_steps, gamma"),
    (["--optimizer-kwargs", "popsize=8"],
     "Invalid optimizer_kwargs: 'popsize' (give it as popsize="),
    (["--lr", "0.1", "--optimizer-kwargs", "lr=0.2"], "Invalid lr: the user gives lr=0.1 and"),
    # settings that do not apply to the chosen family
    (["--optimizer", "ppo", "--popsize", "8"],
     "Invalid popsize=8 for 'ppo': it applies to population optimizers only"),
    (["--optimizer", "pgpe", "--num-envs", "4"],
     "Invalid num_envs=4 for 'pgpe': it applies to ppo and reinforce only"),
    (["--optimizer", "pgpe", "--algo-kwargs", "gamma=0.9"],
     "Invalid algo_kwargs={'gamma': 0.9} for 'pgpe'"),
    (["--optimizer", "pgpe", "--grad-optimizer", "sgd"], "Invalid grad_optimizer='sgd' for 'pgpe'"),
    (["--optimizer", "ppo", "--ray-actors", "2"], "Invalid num_actors for 'ppo'"),
    (["--optimizer", "ppo", "--backend", "torch"], "Invalid backend for 'ppo'"),
    (["--optimizer", "ppo", "--device", "cpu"], "Invalid device for 'ppo'"),
    (["--optimizer", "ppo", "--grad-optimizer", "pgpe"],
     "Invalid grad_optimizer: 'pgpe' is a population optimizer (expected a gradient optimizer, "
     "one of ["),
    (["--optimizer", "ppo", "--grad-optimizer", "adamm"], "Invalid grad_optimizer: 'adamm' "
     "(expected one of ["),
    (["--optimizer", "ppo", "--grad-optimizer", "kl_adaptive", "--algo-kwargs", "anneal_lr=True"],
     "Invalid anneal_lr=True with grad_optimizer 'kl_adaptive'"),
    (["--optimizer", "nope"], "Invalid optimizer: 'nope' (expected one of ["),
    (["--policy", "linear", "--hidden", "32"], "Invalid hidden=(32,) with policy 'linear'"),
    (["--optimizer", "ppo", "--no-obs-norm", "--obs-norm-rule", "ars"],
     "Invalid obs_std_rule='ars' without observation normalisation (expected obs_norm=True"),
    (["--resume"], "--resume needs --run-dir"),
])
def test_bad_train_arguments_exit_2_with_a_clear_message(args, match, capsys):
    assert main(["train", "CartPole-v1", *args, *FAST]) == 2
    err = capsys.readouterr().err
    assert match in err, err
    assert "Traceback" not in err
    if "Invalid grad_optimizer: " in match:
        listed = err.split("one of [")[1]
        assert "'adam'" in listed and "'pgpe'" not in listed and "'cmaes'" not in listed


@pytest.mark.parametrize("kwargs, match", [
    (dict(popsize=0), "Invalid popsize: 0 (expected an integer >= 1)"),
    (dict(optimizer="ppo", num_envs=0), "Invalid num_envs: 0"),
    (dict(rollout_kwargs={"num_actors": 0}), "Invalid num_actors: 0"),
    (dict(policy="mlp", hidden=(0,)), "Invalid hidden: 0"),
    (dict(seed=-1), "Invalid seed: -1"),
])
def test_zero_is_refused_by_the_python_api_too(kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        make_config("CartPole-v1", iterations=1, **kwargs)


# ------------------------------------------------------------------------------ resume
PGPE = dict(optimizer="pgpe", policy="linear", popsize=4, lr=0.1,
            optimizer_kwargs={"stdev_lr": 0.1}, eval_every=1, eval_episodes=1, progress=False,
            plot=False, use_presets=False)


@pytest.mark.parametrize("change, diffs", [
    (dict(lr=0.2), ["config.lr: saved 0.1, expected 0.2"]),
    (dict(seed=5), ["config.seed: saved 0, expected 5"]),
    (dict(optimizer_kwargs={"stdev_lr": 0.3}),
     ["config.optimizer_kwargs.stdev_lr: saved 0.1, expected 0.3"]),
    (dict(lr=0.2, seed=5), ["config.lr", "config.seed"]),
    (dict(obs_std_rule="ars"), ["config.obs_std_rule: saved 'floor', expected 'ars'"]),
])
def test_resume_with_other_settings_is_refused_with_the_differences(tmp_path, change, diffs):
    run = str(tmp_path / "run")
    train("CartPole-v1", iterations=2, run_dir=run, **PGPE)
    before = open(os.path.join(run, "config.json")).read()
    with pytest.raises(ValueError, match="Invalid checkpoint: .* does not match this run") as e:
        train("CartPole-v1", iterations=3, run_dir=run, resume=True, **{**PGPE, **change})
    for d in diffs:
        assert d in str(e.value)
    assert open(os.path.join(run, "config.json")).read() == before  # never what did not run


def test_resume_with_a_larger_budget_continues_and_records_it(tmp_path, capsys):
    run = str(tmp_path / "run")
    train("CartPole-v1", iterations=2, run_dir=run, **PGPE)
    res = train("CartPole-v1", iterations=3, run_dir=run, resume=True,
                **{**PGPE, "eval_episodes": 2})
    assert res.resumed_from == 2 and len(res.history) == 3
    cfg = json.loads(open(os.path.join(run, "config.json")).read())
    assert cfg["iterations"] == 3 and cfg["eval_episodes"] == 2
    # from the command line: a changed lr is a usage error naming the difference
    cli = ["train", "CartPole-v1", "--optimizer", "pgpe", "--run-dir", str(tmp_path / "cli"), *FAST]
    assert main([*cli, "--lr", "0.2"]) == 0
    assert main([*cli, "--lr", "0.3", "--resume"]) == 2
    assert "config.lr: saved 0.2, expected 0.3" in capsys.readouterr().err


def test_config_json_records_only_what_applies(tmp_path):
    run = tmp_path / "ppo"
    train("CartPole-v1", optimizer="ppo", hidden=(8,), num_envs=2, iterations=1,
          algo_kwargs=dict(num_steps=8, update_epochs=1), run_dir=str(run), progress=False,
          plot=False)
    ppo = json.loads((run / "config.json").read_text())
    assert "popsize" not in ppo and ppo["num_envs"] == 2 and ppo["grad_optimizer"] == "adam"
    assert ppo["algo_kwargs"]["num_steps"] == 8 and ppo["algo_kwargs"]["reset_every"] == 50
    run = tmp_path / "pgpe"
    clipup = functools.partial(evoopt.ClipUp, lr=0.1, max_speed=0.15)
    train("CartPole-v1", iterations=1, run_dir=str(run), **{**PGPE, "optimizer_kwargs": {
        "optimizer": clipup}})
    pgpe = json.loads((run / "config.json").read_text())
    assert {"num_envs", "grad_optimizer", "algo_kwargs"}.isdisjoint(pgpe) and pgpe["popsize"] == 4
    assert "hidden" not in pgpe and "hidden" in ppo  # a linear policy has no hidden layers
    assert "obs_std_rule" not in ppo and pgpe["obs_std_rule"] == "floor"  # no normaliser in PPO
    assert set(ppo["sources"]) <= set(ppo) | {"budget"} and "hidden" not in pgpe["sources"]
    assert ppo["sources"]["num_envs"] == "user" and ppo["sources"]["budget"] == "user"
    assert pgpe["optimizer_kwargs"]["optimizer"] == (
        "evoopt.gradient.clipup.ClipUp(lr=0.1, max_speed=0.15)")


def test_a_functools_partial_in_a_preset_is_recorded_by_name():
    from rl.config import _plain

    clipup = functools.partial(evoopt.ClipUp, lr=0.1)
    assert _plain(clipup) == "evoopt.gradient.clipup.ClipUp(lr=0.1)"
    assert _plain((1, float("inf"))) == [1, "inf"]


def test_device_backend_flags_reach_the_rollout_and_give_the_python_api_run(tmp_path):
    """--backend/--device/--compile are rollout_kwargs: the CLI run equals train(...)."""
    from rl.outputs import read_csv
    from rl.train import train

    run = tmp_path / "cli"
    assert main(["train", "CartPole-v1", "--backend", "torch", "--device", "cpu",
                 "--iterations", "2", "--run-dir", str(run), "--no-progress"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["rollout_kwargs"] == {"backend": "torch", "device": "cpu"}
    res = train("CartPole-v1", iterations=2, progress=False, plot=False, tensorboard=False,
                rollout_kwargs={"backend": "torch", "device": "cpu"})
    rows = read_csv(str(run / "metrics.csv"))
    assert [r["train_return"] for r in rows] == [r["train_return"] for r in res.history]
