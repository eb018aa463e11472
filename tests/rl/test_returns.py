"""rl.returns against plain Python sums written per episode segment (float64)."""

import math

import pytest
import torch

from rl.returns import compute_gae, discounted_returns, next_values_from


def _random_rollout(T=40, N=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, N, generator=g, dtype=torch.float64)
    values = torch.randn(T, N, generator=g, dtype=torch.float64)
    next_values = torch.randn(T, N, generator=g, dtype=torch.float64)
    u = torch.rand(T, N, generator=g, dtype=torch.float64)
    terminated = u < 0.08
    truncated = (u >= 0.08) & (u < 0.14)
    return rewards, values, next_values, terminated, truncated


def _segment_end(term, trunc, t, T):
    """Last step index of the episode segment that contains t (within the rollout)."""
    k = t
    while k < T - 1 and not (term[k] or trunc[k]):
        k += 1
    return k


def _reference(rewards, values, next_values, term, trunc, gamma, lam):
    """Explicit sums: A_t = sum_l (gamma*lam)^l delta_{t+l};
    G_t = sum_l gamma^l r_{t+l} + gamma^(k+1) V_boot."""
    T, N = rewards.shape
    adv = [[0.0] * N for _ in range(T)]
    ret = [[0.0] * N for _ in range(T)]
    for n in range(N):
        r = rewards[:, n].tolist(); v = values[:, n].tolist(); nv = next_values[:, n].tolist()
        te = term[:, n].tolist(); tr = trunc[:, n].tolist()
        delta = [r[t] + gamma * (0.0 if te[t] else nv[t]) - v[t] for t in range(T)]
        for t in range(T):
            end = _segment_end(te, tr, t, T)
            adv[t][n] = sum((gamma * lam) ** (k - t) * delta[k] for k in range(t, end + 1))
            boot = 0.0 if te[end] else nv[end]
            ret[t][n] = (sum(gamma ** (k - t) * r[k] for k in range(t, end + 1))
                         + gamma ** (end + 1 - t) * boot)
    return torch.tensor(adv, dtype=torch.float64), torch.tensor(ret, dtype=torch.float64)


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.98, 0.8), (0.9, 0.0), (1.0, 1.0)])
def test_gae_matches_per_episode_sums(gamma, lam):
    rewards, values, next_values, term, trunc = _random_rollout()
    adv, ret = compute_gae(rewards, values, next_values, term, trunc, gamma=gamma, gae_lambda=lam)
    ref_adv, _ = _reference(rewards, values, next_values, term, trunc, gamma, lam)
    torch.testing.assert_close(adv, ref_adv, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ret, ref_adv + values, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.99, 0.5, 1.0])
def test_discounted_returns_match_per_episode_sums(gamma):
    rewards, values, next_values, term, trunc = _random_rollout(seed=3)
    G = discounted_returns(rewards, term, trunc, gamma=gamma, next_values=next_values)
    _, ref = _reference(rewards, values, next_values, term, trunc, gamma, 1.0)
    torch.testing.assert_close(G, ref, rtol=1e-12, atol=1e-12)


def test_gae_lambda_one_is_monte_carlo_minus_value():
    rewards, values, next_values, term, trunc = _random_rollout(seed=7)
    # telescoping needs next_values[t] = values[t+1] inside an episode
    next_values = next_values_from(values, next_values[-1])
    adv, _ = compute_gae(rewards, values, next_values, term, trunc, gamma=0.97, gae_lambda=1.0)
    G = discounted_returns(rewards, term, trunc, gamma=0.97, next_values=next_values)
    torch.testing.assert_close(adv, G - values, rtol=1e-10, atol=1e-10)


def test_truncation_bootstraps_and_termination_does_not():
    # one env, three steps, reward 1 each; episode ends at t=1
    r = torch.ones(3, 1, dtype=torch.float64)
    nv = torch.full((3, 1), 10.0, dtype=torch.float64)
    ends = torch.tensor([[False], [True], [False]])
    never = torch.zeros(3, 1, dtype=torch.bool)
    g = 0.5
    G_trunc = discounted_returns(r, never, ends, gamma=g, next_values=nv)
    G_term = discounted_returns(r, ends, never, gamma=g, next_values=nv)
    # t=1 truncated: 1 + 0.5*10 = 6; t=0: 1 + 0.5*6 = 4; t=2 (rollout end): 1 + 0.5*10 = 6
    assert G_trunc[:, 0].tolist() == [4.0, 6.0, 6.0]
    # t=1 terminated: 1; t=0: 1.5
    assert G_term[:, 0].tolist() == [1.5, 1.0, 6.0]
    # no next_values: nothing bootstrapped
    assert discounted_returns(r, never, ends, gamma=g)[:, 0].tolist() == [1.5, 1.0, 1.0]


def test_next_values_from_shifts_and_appends():
    v = torch.arange(6.0).reshape(3, 2)
    nv = next_values_from(v, torch.tensor([7.0, 8.0]))
    assert nv.tolist() == [[2.0, 3.0], [4.0, 5.0], [7.0, 8.0]]


def test_one_dimensional_rollout():
    rewards, values, next_values, term, trunc = _random_rollout(T=25, N=1, seed=11)
    a2, r2 = compute_gae(rewards, values, next_values, term, trunc, gamma=0.9, gae_lambda=0.7)
    a1, r1 = compute_gae(rewards[:, 0], values[:, 0], next_values[:, 0], term[:, 0], trunc[:, 0],
                         gamma=0.9, gae_lambda=0.7)
    torch.testing.assert_close(a1, a2[:, 0])


@pytest.mark.parametrize("kwargs,match", [
    (dict(gamma=1.5), "Invalid gamma: 1.5"),
    (dict(gamma=-0.1), "Invalid gamma"),
    (dict(gae_lambda=2.0), "Invalid gae_lambda: 2.0"),
    (dict(gae_lambda=math.nan), "Invalid gae_lambda"),
])
def test_bad_hyperparameters(kwargs, match):
    z = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=match):
        compute_gae(z, z, z, z, z, **kwargs)


def test_bad_shapes():
    z = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"Invalid values: shape \(4, 3\)"):
        compute_gae(z, torch.zeros(4, 3), z, z)
    with pytest.raises(ValueError, match=r"Invalid terminated: shape \(4,\)"):
        discounted_returns(z, torch.zeros(4))
    with pytest.raises(ValueError, match=r"Invalid rewards: shape \(2, 2, 2\)"):
        discounted_returns(torch.zeros(2, 2, 2), torch.zeros(2, 2, 2))
