"""REINFORCE: solves CartPole-v1 (deterministic evaluation >= 475 over 20 episodes)
within 100k env steps, finds a bandit's best arm with SGD, value baseline and KLAdaptive
work, resumes exactly, rejects bad input."""

import functools
import io
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from evoopt import KLAdaptive
from rl.algorithms.reinforce import REINFORCE_METRICS, Reinforce
from rl.policies import make_policy
from rl.rollout import PopulationRollout

from ._envs import BanditEnv, vector


def cartpole(n=8):
    return gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="vector_entry_point")


def make_agent(envs, seed, **kw):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make_policy(envs, "mlp", hidden=(32,), stochastic=True, **kw)


def test_reinforce_solves_cartpole_within_100k_steps():
    torch.set_num_threads(1)
    envs = cartpole()
    agent = make_agent(envs, 0)
    algo = Reinforce(envs, agent, functools.partial(torch.optim.Adam, lr=1e-2), gamma=0.99, seed=0)
    evaluator = PopulationRollout("CartPole-v1", agent, 1)
    solved = []

    def check(m):
        if (m["iteration"] % 10 == 0
                and evaluator.evaluate_center(num_episodes=20, seed=10_000).mean() >= 475):
            solved.append(m["global_step"])
            return True
        return False

    algo.learn(100_000, check)
    assert solved and solved[0] <= 100_000


def test_bandit_best_arm_with_sgd():
    # rewards [1, 0, 0.5]: the policy must put > 0.95 on arm 0
    envs = vector(BanditEnv, 16)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        agent = make_policy(envs, "linear", stochastic=True)
    algo = Reinforce(envs, agent, functools.partial(torch.optim.SGD, lr=0.5), baseline="mean",
                     seed=0)
    algo.learn(16 * 60)
    probs = agent.distribution(torch.ones(1, 1)).probs[0].detach()
    assert float(probs[0]) > 0.95, probs


def test_value_baseline_and_kl_adaptive_on_bandit():
    envs = vector(BanditEnv, 16)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        agent = make_policy(envs, "linear", actor_critic=True, critic_hidden=(8,))
    opt = KLAdaptive(torch.optim.Adam(agent.parameters(), lr=1e-3), target_kl=0.02, lr_max=0.5)
    algo = Reinforce(envs, agent, opt, baseline="value", seed=0)
    hist = algo.learn(16 * 80)
    assert opt.num_increases > 0  # the lr grew from 1e-3 toward the KL target
    with torch.no_grad():
        assert float(agent.distribution(torch.ones(1, 1)).probs[0, 0]) > 0.9
        assert float(agent.value(torch.ones(1, 1))) == pytest.approx(1.0, abs=0.15)
    assert set(hist[-1]) == set(REINFORCE_METRICS)
    assert all(m["num_episodes"] == 16 and m["global_step"] == 16 * m["iteration"] for m in hist)


def test_resume_reproduces_the_uninterrupted_run():
    def build():
        envs = cartpole(4)
        return Reinforce(envs, make_agent(envs, 2), functools.partial(torch.optim.Adam, lr=1e-2),
                         seed=4)

    a = build()
    for _ in range(2):
        a.iterate()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    tail = [{k: v for k, v in a.iterate().items() if k != "sps"} for _ in range(3)]
    buf.seek(0)
    b = build()
    b.load_state_dict(torch.load(buf, weights_only=True))
    again = [{k: v for k, v in b.iterate().items() if k != "sps"} for _ in range(3)]
    np.testing.assert_equal(again, tail)
    assert all(torch.equal(p, q) for p, q in zip(a.agent.parameters(), b.agent.parameters()))


def test_max_steps_truncates_and_counts_valid_steps():
    envs = cartpole(3)
    algo = Reinforce(envs, make_agent(envs, 0), max_steps=7, seed=0)
    m = algo.iterate()
    assert m["num_episodes"] == 3 and m["episodic_length"] <= 7
    assert m["global_step"] == round(3 * m["episodic_length"])


@pytest.mark.parametrize("kwargs,match", [
    (dict(gamma=2.0), "Invalid gamma: 2.0"),
    (dict(baseline="critic"), r"Invalid baseline: 'critic' \(expected one of"),
    (dict(ent_coef=-1.0), "Invalid ent_coef"),
    (dict(max_steps=0), "Invalid max_steps: 0"),
    (dict(baseline="value"), "Invalid baseline: 'value' needs agent.value"),
    (dict(max_grad_norm=math.inf), "Invalid max_grad_norm"),
])
def test_bad_arguments(kwargs, match):
    envs = cartpole(2)
    with pytest.raises(ValueError, match=match):
        Reinforce(envs, make_agent(envs, 0), **kwargs)
