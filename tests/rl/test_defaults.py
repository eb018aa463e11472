"""The per-task defaults table (rl/defaults.py): `evoopt train ENV` with no other flag
solves the Gymnasium classic-control tasks (issue 12; Pendulum-v1 not yet, see SOLVED).

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
#: The classic tasks whose default solves them on seeds 0-2 with a margin, tested in CI.
#: MountainCar-v0 reaches -110 on seeds 0-2 on one machine but only just (-108.4, -109.0,
#: -109.7 after up to 74 generations): opt-in (EVOOPT_FULL=1), as a run that
#: another CPU may end at -110.5. Pendulum-v1 has no population default yet.
SOLVED = ["Acrobot-v1", "CartPole-v1", "MountainCarContinuous-v0"]
PRESET_KEYS = {
    "policy", "hidden", "lr", "popsize", "num_envs", "obs_norm", "obs_std_rule", "policy_kwargs",
    "optimizer_kwargs", "algo_kwargs", "grad_optimizer", "total_timesteps", "iterations",
    "rollout_kwargs", "target_return", "eval_every", "eval_episodes",
}


def _train_default(env_id, seed):
    """What `evoopt train ENV --seed SEED` runs: nothing but the env id and the seed, so
    DEFAULT_OPTIMIZER[ENV] with its whole preset (budget, evaluation, target included)."""
    return train(env_id, seed=seed, progress=False, tensorboard=False, plot=False)


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


def _solve(env_id, seed):
    result = _train_default(env_id, seed)
    steps = int(result.history[-1]["env_steps"])
    assert result.final_eval >= THRESHOLDS[env_id], (
        f"{env_id} seed {seed}: final evaluation {result.final_eval:.1f} after {steps} steps")


# Seeds 0-2 of the three tasks cost about 60 s of CPU in all (1 thread; CartPole 2-4 s,
# MountainCarContinuous 3-4 s, Acrobot 9-15 s a seed).
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("env_id", SOLVED)
def test_default_optimizer_solves_the_task(env_id, seed):
    _solve(env_id, seed)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("EVOOPT_FULL"),
                    reason="MountainCar-v0: 1-2 CPU minutes a seed; set EVOOPT_FULL=1")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_optimizer_solves_mountain_car(seed):
    _solve("MountainCar-v0", seed)
