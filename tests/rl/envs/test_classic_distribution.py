"""Episode statistics of the torch classic-control envs (float32, the default) against
Gymnasium's, by two-sample Kolmogorov-Smirnov tests at significance level 0.001 with fixed
seeds: reject when ``D > c sqrt((n + m) / (n m))``, ``c = sqrt(-ln(0.001 / 2) / 2) =
1.949`` (the asymptotic critical value; conservative for discrete samples such as episode
lengths). No scipy needed.

- initial states: 10,000 resets per env, each state coordinate;
- CartPole, uniform random policy: lengths and returns of 10,000 episodes (Gymnasium's
  numpy vector CartPole, its own env, makes the reference sample cheap);
- the other four under the tests' policies (half uniform random, half a goal-reaching
  heuristic, so that both terminations and truncations occur), on shorter horizons and
  1,000-2,000 episodes (marked slow): Gymnasium steps them one env at a time from Python
  (Acrobot's RK4 costs 0.1-0.2 ms a step here).
"""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import rl.envs

from ._twins import CLASSIC_IDS, gym_action, policy

ALPHA = 0.001
C_ALPHA = math.sqrt(-math.log(ALPHA / 2) / 2)


def ks_statistic(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b|."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def assert_same_distribution(a, b, what):
    n, m = len(a), len(b)
    d, critical = ks_statistic(a, b), C_ALPHA * math.sqrt((n + m) / (n * m))
    assert d <= critical, f"{what}: KS D = {d:.4f} > {critical:.4f} (alpha {ALPHA})"


def test_ks_statistic_and_critical_value():
    assert math.isclose(C_ALPHA, 1.9495, abs_tol=1e-4)
    assert ks_statistic([1, 2, 3], [1, 2, 3]) == 0.0
    assert ks_statistic([0, 0], [1, 1]) == 1.0
    assert math.isclose(ks_statistic([1, 2, 3, 4], [3, 4, 5, 6]), 0.5)
    rng = np.random.default_rng(0)
    with pytest.raises(AssertionError, match="KS D"):
        assert_same_distribution(rng.uniform(0, 1, 2000), rng.uniform(0.1, 1.1, 2000), "shift")


@pytest.mark.parametrize("env_id", CLASSIC_IDS)
def test_reset_distribution_matches_gymnasium(env_id):
    n = 10_000
    env = rl.envs.make(env_id, n, seed=5)
    ours = env.reset()[0].numpy()
    gym_env = gym.make(env_id)
    theirs = np.stack([gym_env.reset(seed=10_000 + i)[0] for i in range(n)])
    for k in range(ours.shape[1]):
        if np.ptp(theirs[:, k]) == 0:  # a constant coordinate (the cars' speed)
            assert (ours[:, k] == theirs[0, k]).all()
        else:
            assert_same_distribution(ours[:, k], theirs[:, k], f"{env_id} obs[{k}]")


def _torch_episodes(env_id, n, max_steps, seed, greedy):
    """Lengths and returns of one episode in each of ``n`` envs (autoreset disabled: an
    env that ended stays ended with reward 0, so the returns are plain sums)."""
    env = rl.envs.make(
        env_id, n, seed=seed, autoreset_mode="disabled", max_episode_steps=max_steps
    )
    obs, _ = env.reset()
    gen = torch.Generator().manual_seed(seed + 1)
    returns = torch.zeros(n, dtype=torch.float64)
    ended = torch.zeros(n, dtype=torch.bool)
    while not ended.all():
        obs, reward, terminated, truncated, _ = env.step(policy(env_id, obs, gen, greedy))
        returns += reward
        ended = terminated | truncated
    return env.get_state()["elapsed_steps"].numpy(), returns.numpy()


def _gym_episodes(env_id, n, max_steps, seed, greedy):
    """The same, with ``n`` Gymnasium envs stepped in lockstep (one policy call a step)."""
    envs = [gym.make(env_id, max_episode_steps=max_steps) for _ in range(n)]
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    gen = torch.Generator().manual_seed(seed + 1)
    lengths, returns = np.zeros(n), np.zeros(n)
    alive = np.ones(n, bool)
    while alive.any():
        idx = np.flatnonzero(alive)
        actions = policy(env_id, torch.as_tensor(obs[idx]), gen, greedy[idx])
        for i, action in zip(idx, actions):
            obs[i], reward, terminated, truncated, _ = envs[i].step(gym_action(action, np.float32))
            lengths[i] += 1
            returns[i] += reward
            alive[i] = not (terminated or truncated)
    return lengths, returns


def _compare_episodes(env_id, ours, theirs):
    for name, a, b in zip(("lengths", "returns"), ours, theirs):
        # float32 rewards summed: 89.0000014 against Gymnasium's 89.0; ties must stay ties
        a, b = np.round(a, 4), np.round(b, 4)
        if np.ptp(b) == 0:  # Pendulum never terminates: every length is the horizon
            assert (a == b[0]).all(), f"{env_id} {name}"
        else:
            assert_same_distribution(a, b, f"{env_id} {name}")


def test_cartpole_random_episodes_match_gymnasium():
    """Uniform random actions, 10,000 episodes; Gymnasium's side is its numpy vector
    CartPole (next-step autoreset: the first episode of each env)."""
    n = 10_000
    ours = _torch_episodes("CartPole-v1", n, 500, seed=6, greedy=torch.zeros(n, dtype=bool))
    env = gym.make_vec("CartPole-v1", n, vectorization_mode="vector_entry_point")
    env.reset(seed=8)
    rng = np.random.default_rng(9)
    lengths, returns = np.zeros(n), np.zeros(n)
    alive = np.ones(n, bool)
    while alive.any():
        _, reward, terminated, truncated, _ = env.step(rng.integers(0, 2, n))
        lengths += alive
        returns += reward * alive
        alive &= ~(terminated | truncated)
    _compare_episodes("CartPole-v1", ours, (lengths, returns))


# horizon (max_episode_steps) and number of episodes for the Gymnasium envs stepped singly
SLOW_CASES = {
    "Acrobot-v1": (100, 1000),
    "MountainCar-v0": (150, 1000),
    "MountainCarContinuous-v0": (200, 1000),
    "Pendulum-v1": (40, 2000),
}


@pytest.mark.slow
@pytest.mark.parametrize("env_id", list(SLOW_CASES))
def test_episodes_match_gymnasium(env_id):
    max_steps, n = SLOW_CASES[env_id]
    greedy = torch.arange(n) % 2 == 1
    ours = _torch_episodes(env_id, n, max_steps, seed=11, greedy=greedy)
    theirs = _gym_episodes(env_id, n, max_steps, seed=12, greedy=greedy)
    _compare_episodes(env_id, ours, theirs)
