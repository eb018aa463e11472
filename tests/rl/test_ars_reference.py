"""ARS V2-t as the authors' code runs it (github.com/modestyachts/ARS, code/ars.py,
policies.py, filter.py), rewritten here in plain numpy: its observation filter, its top-b
step, and whole training iterations on MuJoCo against evoopt.ARS + rl.PopulationRollout
with a bias-free, unsquashed linear policy and ``RunningNorm(std_rule="ars")``."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import evoopt
from rl import PopulationRollout, RunningNorm, make_policy


class MeanStdFilterRef:
    """ARS's MeanStdFilter: Welford pushes; the normalisation uses the statistics frozen at
    the last stats_increment (sample std, < 1e-7 -> inf), x -> (x - mean) / (std + 1e-8)."""

    def __init__(self, d):
        self.n, self.M, self.S = 0, np.zeros(d), np.zeros(d)
        self.mean, self.std = np.zeros(d), np.ones(d)

    def push(self, x):
        self.n += 1
        if self.n == 1:
            self.M = x.astype(np.float64).copy()
        else:
            delta = x - self.M
            self.M = self.M + delta / self.n
            self.S = self.S + delta * delta * (self.n - 1) / self.n

    def stats_increment(self):
        self.mean = self.M.copy()
        std = np.sqrt(self.S / (self.n - 1)) if self.n > 1 else np.abs(self.M)
        std[std < 1e-7] = np.inf
        self.std = std

    def __call__(self, x):
        return (x - self.mean) / (self.std + 1e-8)


def ars_step_ref(w, deltas, r_plus, r_minus, b, lr):
    """code/ars.py aggregate_rollouts + SGD: top-b by the percentile rule, rewards divided
    by their std, g = sum (r+ - r-) delta / b, w += lr * g."""
    N = len(deltas)
    rewards = np.stack([r_plus, r_minus], 1)
    max_r = rewards.max(1)
    idx = np.arange(N)[max_r >= np.percentile(max_r, 100 * (1 - b / N))]
    rewards = rewards[idx] / np.std(rewards[idx])
    g = ((rewards[:, 0] - rewards[:, 1])[:, None] * deltas[idx]).sum(0) / idx.size
    return w + lr * g


def test_ars_std_rule_equals_the_authors_mean_std_filter():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(500, 4)) * np.array([1.0, 1e-3, 0.0, 3.0])
         + np.array([0.5, 2.0, 7.0, -1.0]))
    x[:, 2] += rng.normal(size=500) * 1e-9  # sample std ~1e-9 < 1e-7: zeroed by ARS
    ref = MeanStdFilterRef(4)
    for row in x[:300]:
        ref.push(row)
    ref.stats_increment()
    norm = RunningNorm(4, std_rule="ars")
    probe = torch.from_numpy(x[300:])
    # no data: ~identity
    torch.testing.assert_close(norm(probe), probe / (1 + 1e-8), rtol=1e-15, atol=0)
    norm.update(torch.from_numpy(x[:300]))
    got = norm(probe).numpy()
    np.testing.assert_allclose(got, ref(x[300:]), rtol=1e-9, atol=1e-12)
    assert (got[:, 2] == 0).all() and np.abs(got[:, 1]).max() > 1  # zeroed; 1e-3 scale blown up
    # the default floor keeps the 1e-3 coordinate small instead (min_var = 1e-2)
    floor = RunningNorm(4)
    floor.update(torch.from_numpy(x[:300]))
    assert np.abs(floor(probe).numpy()[:, 1]).max() < 0.05
    with pytest.raises(ValueError,
                       match=r"Invalid std_rule: 'ddof1' \(expected 'floor' or 'ars'\)"):
        RunningNorm(4, std_rule="ddof1")


@pytest.mark.parametrize("N, b", [(8, 4), (32, 4), (1, 1), (6, 6)])
def test_ars_generations_equal_the_authors_percentile_top_b_step(N, b):
    D, lr, nu = 7, 0.02, 0.03
    target = torch.linspace(-1, 1, D, dtype=torch.float64)
    p = torch.nn.Parameter(torch.zeros(D, dtype=torch.float64))
    opt = evoopt.ARS([p], lr=lr, sigma=nu, popsize=2 * N, num_top=b, seed=4, maximize=True)
    w = np.zeros(D)
    for _ in range(4):
        pop = opt.ask()
        flat = pop.flat.numpy()
        rewards = -((flat - target.numpy()) ** 2).sum(1) + np.sin(7 * flat).sum(1)
        deltas = (flat[:N] - w) / nu
        np.testing.assert_allclose(flat[N:], w - nu * deltas, rtol=0, atol=1e-15)
        w = ars_step_ref(w, deltas, rewards[:N], rewards[N:], b, lr)
        opt.tell(torch.from_numpy(rewards))
        np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-12, atol=1e-15)
    assert np.abs(w).max() > 0.01  # it moved


def test_ars_v2t_iterations_on_swimmer_equal_the_authors_training_loop():
    # 3 iterations, N = 3 directions, b = 2, 20-step episodes, a large nu so that raw actions
    # leave [-1, 1] (MuJoCo clamps them; the control cost is charged on the raw action).
    env_id, T, N, b, lr, nu, shift = "Swimmer-v5", 20, 3, 2, 0.02, 2.0, 0.5
    policy = make_policy(env_id, kind="linear", bias=False, squash="none",
                         obs_norm=RunningNorm(8, std_rule="ars")).double()
    opt = evoopt.ARS(policy.parameters(), lr=lr, sigma=nu, popsize=2 * N, num_top=b, seed=1)
    ro = PopulationRollout(env_id, policy, 2 * N, seed=9, max_episode_steps=T, reward_shift=-shift)
    W = np.zeros((2, 8))  # ARS's LinearPolicy: W = 0, no bias
    filt = MeanStdFilterRef(8)
    env = gym.make(env_id, max_episode_steps=T)
    max_action = 0.0
    for it in range(3):
        pop = opt.ask()
        flat = pop.flat.numpy()
        deltas = (flat[:N] - W.reshape(-1)) / nu
        seeds = ro.generation_seeds(it)[:, 0]
        rewards, pushed = np.zeros(2 * N), []
        for i in range(2 * N):  # the worker: frozen stats, every state pushed, reward - shift
            Wi = (W.reshape(-1) + (nu if i < N else -nu) * deltas[i % N]).reshape(2, 8)
            obs, _ = env.reset(seed=int(seeds[i]))
            done = False
            while not done:
                pushed.append(obs.astype(np.float64))
                a = Wi @ filt(obs.astype(np.float64))
                max_action = max(max_action, np.abs(a).max())
                obs, r, term, trunc, _ = env.step(a.astype(np.float32))
                rewards[i] += r - shift
                done = term or trunc
        losses = ro(pop)
        np.testing.assert_allclose(-losses.numpy(), rewards, rtol=1e-9)
        opt.tell(losses)
        W = ars_step_ref(W.reshape(-1), deltas, rewards[:N], rewards[N:], b, lr).reshape(2, 8)
        np.testing.assert_allclose(policy.layers[0].weight.detach().numpy(), W,
                                   rtol=1e-7, atol=1e-12)
        for row in pushed:  # the learner: merge all workers' states, then stats_increment
            filt.push(row)
        filt.stats_increment()
        assert policy.obs_norm.count.item() == filt.n == 2 * N * T * (it + 1)  # no member fell
        np.testing.assert_allclose(policy.obs_norm.mean.numpy(), filt.mean, rtol=1e-10)
        np.testing.assert_allclose(policy.obs_norm.std.numpy(), filt.std + 1e-8, rtol=1e-10)
    assert max_action > 1.0  # the raw actions left the bounds: squash="none" was exercised
    # evaluation rollouts use the statistics but never update them (ARS: update_filter = False)
    before = policy.obs_norm.stats()
    ro.evaluate_center(num_episodes=2, seed=0)
    assert (torch.equal(policy.obs_norm.count, before["count"])
            and torch.equal(policy.obs_norm.m2, before["m2"]))
