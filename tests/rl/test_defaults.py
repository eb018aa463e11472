"""The per-task defaults table (rl/defaults.py): `evoopt train ENV` with no other flag
solves the Gymnasium classic-control tasks (issue 12).

"Solved" is the task's usual threshold reached by ``train``'s final evaluation: the
deterministic policy's mean return over the preset's ``eval_episodes`` (50) fixed-seed
episodes, at the first evaluation at or above ``target_return``.
"""

import inspect
import os

import pytest

from rl.defaults import DEFAULT_OPTIMIZER, PRESETS
from rl.train import train

#: The usual thresholds (Gymnasium's reward_threshold; Pendulum: -200, as rl-zoo).
THRESHOLDS = {
    "CartPole-v1": 475, "Acrobot-v1": -100, "MountainCar-v0": -110,
    "MountainCarContinuous-v0": 90, "Pendulum-v1": -200,
}
#: The MuJoCo tasks of bench/bench_ars_mujoco.py: the ARS paper's thresholds (no CI run).
MUJOCO_THRESHOLDS = {"Swimmer-v5": 325, "HalfCheetah-v5": 3430, "Hopper-v5": 3120}
SEEDS = (0, 1, 2)
#: Every classic task's default solves it on seeds 0-2; the runs that fit CI's budget run
#: every time, the others with EVOOPT_FULL=1. CPU seconds a seed (1 thread, shared 2-core
#: machine): CartPole 2-4, MountainCarContinuous 3-4, Acrobot 9-15 (PGPE), Pendulum 55-80
#: (PPO), MountainCar 25-40 (CMA-ES).
FAST = ["Acrobot-v1", "CartPole-v1", "MountainCarContinuous-v0"]
EVERY_RUN = [(env_id, seed) for env_id in FAST for seed in SEEDS] + [("Pendulum-v1", 0)]
FULL_RUN = [("Pendulum-v1", 1), ("Pendulum-v1", 2)] + [("MountainCar-v0", s) for s in SEEDS]
PRESET_KEYS = {
    "policy", "hidden", "lr", "popsize", "num_envs", "obs_norm", "obs_std_rule", "policy_kwargs",
    "optimizer_kwargs", "algo_kwargs", "grad_optimizer", "total_timesteps", "iterations",
    "rollout_kwargs", "target_return", "eval_every", "eval_episodes",
}


def _train_default(env_id, seed, optimizer=None):
    """What `evoopt train ENV --seed SEED` runs: nothing but the env id and the seed, so
    DEFAULT_OPTIMIZER[ENV] with its whole preset (budget, evaluation, target included);
    with ``optimizer``, that optimizer's preset."""
    return train(env_id, optimizer=optimizer, seed=seed, progress=False, tensorboard=False,
                 plot=False)


def test_every_preset_holds_known_keys_that_train_takes():
    params = set(inspect.signature(train).parameters)
    for key, preset in PRESETS.items():
        unknown = set(preset) - PRESET_KEYS
        assert not unknown, f"{key}: {sorted(unknown)}"
        assert set(preset) <= params, key
    for env_id, optimizer in DEFAULT_OPTIMIZER.items():
        preset = PRESETS[(env_id, optimizer)]
        assert preset["target_return"] == (THRESHOLDS | MUJOCO_THRESHOLDS)[env_id]
        assert preset["eval_episodes"] >= 20
        assert preset.get("iterations") or preset.get("total_timesteps")
    for env_id, threshold in THRESHOLDS.items():  # PPO: rl-zoo's settings for every task
        assert PRESETS[(env_id, "ppo")]["target_return"] == threshold


def _solve(env_id, seed, optimizer=None):
    result = _train_default(env_id, seed, optimizer)
    steps = int(result.history[-1]["env_steps"])
    assert result.final_eval >= THRESHOLDS[env_id], (
        f"{env_id} seed {seed}: final evaluation {result.final_eval:.1f} after {steps} steps")


def test_every_classic_task_has_a_default_tested_on_seeds_0_to_2():
    assert sorted(EVERY_RUN + FULL_RUN) == sorted((e, s) for e in THRESHOLDS for s in SEEDS)
    assert set(THRESHOLDS) <= set(DEFAULT_OPTIMIZER)


# The whole file without EVOOPT_FULL: 107 s (pytest --durations, load about 2 on the 2-core
# machine): Pendulum's seed 0 65 s, the nine others 40 s. Pendulum's seeds 1-2 would add
# about 2 minutes, past CI's budget: EVOOPT_FULL=1 (which runs 310 s more).
@pytest.mark.slow
@pytest.mark.parametrize("env_id, seed", EVERY_RUN)
def test_default_optimizer_solves_the_task(env_id, seed):
    _solve(env_id, seed)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("EVOOPT_FULL"),
                    reason="0.5-1.5 CPU minutes a run; set EVOOPT_FULL=1")
@pytest.mark.parametrize("env_id, seed", FULL_RUN)
def test_default_optimizer_solves_the_slow_task(env_id, seed):
    _solve(env_id, seed)


# PPO with rl-zoo's settings (rl/defaults.py) solves CartPole-v1 and Acrobot-v1 too (Pendulum-v1
# is its default, above); not MountainCar-v0 nor MountainCarContinuous-v0 (no reward
# normalisation, no gSDE here). 40-60 CPU s a run.
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("EVOOPT_FULL"),
                    reason="about 1 CPU minute a run; set EVOOPT_FULL=1")
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1"])
def test_ppo_preset_solves_the_task(env_id):
    _solve(env_id, 0, optimizer="ppo")
