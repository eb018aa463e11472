"""PPO: solves CartPole-v1 with Adam (rl-zoo hyperparameters) and with KLAdaptive within
100k env steps, learns a continuous-action task, resumes exactly, rejects bad input.

"Solved": the DETERMINISTIC policy (argmax action) averages >= 475 over 20 evaluation
episodes (seeds 10000..10019), checked every 10 iterations (2560 env steps).
"""

import functools
import io
import math
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

from evoopt import ClipUp, KLAdaptive
from rl.algorithms.ppo import PPO, PPO_METRICS
from rl.policies import ActorCritic, make_policy
from rl.rollout import PopulationRollout

from ._envs import TargetEnv, vector

# rl-zoo hyperparameters for CartPole-v1 PPO: n_envs 8, n_steps 32, batch 256 (one minibatch),
# gae_lambda 0.8, gamma 0.98, n_epochs 20, ent_coef 0, lr linear 1e-3, clip_range linear 0.2,
# SB3's value loss without clipping: SB3 minimises vf_coef 0.5 * mse, ours vf_coef * 0.5 * mse
# -> 1.0
ZOO = dict(num_steps=32, gamma=0.98, gae_lambda=0.8, num_minibatches=1, update_epochs=20,
           ent_coef=0.0, clip_coef=0.2, anneal_clip_coef=True, clip_vloss=False, vf_coef=1.0)


def cartpole(n=8):
    return gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="vector_entry_point")


def make_agent(envs, seed, **kw):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ActorCritic(4, envs.single_action_space, hidden=(64, 64), **kw)


def steps_to_solve(ppo, agent, budget=100_000):
    evaluator = PopulationRollout("CartPole-v1", agent, 1)
    solved = []

    def check(m):
        if m["iteration"] % 10 == 0:
            ret = float(evaluator.evaluate_center(num_episodes=20, seed=10_000).mean())
            if ret >= 475:
                solved.append(m["global_step"])
                return True
        return False

    ppo.learn(budget, check)
    return solved[0] if solved else math.inf


@pytest.mark.slow
def test_ppo_adam_solves_cartpole_within_100k_steps():
    torch.set_num_threads(1)
    envs = cartpole()
    agent = make_agent(envs, seed=0)
    ppo = PPO(envs, agent, functools.partial(torch.optim.Adam, lr=1e-3, eps=1e-5), anneal_lr=True,
              seed=0, **ZOO)
    t = time.perf_counter()
    steps = steps_to_solve(ppo, agent)
    print(f"PPO+Adam solved CartPole-v1 in {steps} steps, {time.perf_counter() - t:.1f} s")
    assert steps <= 100_000


@pytest.mark.slow
def test_ppo_kl_adaptive_solves_cartpole_within_100k_steps():
    torch.set_num_threads(1)
    envs = cartpole()
    agent = make_agent(envs, seed=0)
    factory = lambda p: KLAdaptive(torch.optim.Adam(p, lr=1e-3, eps=1e-5), target_kl=0.01)  # noqa: E731
    ppo = PPO(envs, agent, factory, seed=0, **ZOO)
    t = time.perf_counter()
    steps = steps_to_solve(ppo, agent)
    print(f"PPO+KLAdaptive solved CartPole-v1 in {steps} steps, {time.perf_counter() - t:.1f} s")
    assert steps <= 100_000
    assert ppo.optimizer.num_decreases > 0 and ppo.optimizer.num_increases > 0


OPTIMIZERS = {
    "adam": functools.partial(torch.optim.Adam, lr=3e-2),
    "clipup": functools.partial(ClipUp, lr=0.05, momentum=0.9, max_speed=0.1),
    "kl_adaptive": lambda p: KLAdaptive(torch.optim.Adam(p, lr=3e-2), target_kl=0.02, lr_max=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_ppo_learns_a_continuous_action_task(name):
    # optimum: a = obs0 - 0.5 obs1 (linear actor), episodes of one step
    envs = vector(TargetEnv, 8)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        agent = ActorCritic(2, envs.single_action_space, hidden=(), critic_hidden=(16,),
                            log_std_init=-0.5)
    ppo = PPO(envs, agent, OPTIMIZERS[name], num_steps=16, num_minibatches=2,
              update_epochs=4, ent_coef=0.0, seed=1)
    ppo.learn(8 * 16 * 60)
    w = agent.layers[0].weight.detach().reshape(-1)
    torch.testing.assert_close(w, torch.tensor([1.0, -0.5]), atol=0.1, rtol=0)
    assert float(agent.log_std.detach()) < -1.0  # the Gaussian narrows as the mean fits


def test_first_minibatch_ratio_is_one_with_obs_norm():
    # old and new log-probs use the same (frozen) normaliser: one epoch, one minibatch
    # -> no change yet
    envs = cartpole(4)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        agent = make_policy(envs, "mlp", hidden=(16,), actor_critic=True, obs_norm=True)
    ppo = PPO(envs, agent, num_steps=16, num_minibatches=1, update_epochs=1, seed=0)
    for _ in range(3):
        m = ppo.iterate()
        assert abs(m["old_approx_kl"]) < 1e-6 and m["clipfrac"] == 0.0
    assert float(agent.obs_norm.count) > 0
    assert set(m) == set(PPO_METRICS)


def _run(ppo, n):
    return [{k: v for k, v in ppo.iterate().items() if k != "sps"} for _ in range(n)]


@pytest.mark.parametrize("opt", ["adam", "kl"])
def test_resume_reproduces_the_uninterrupted_run(opt):
    def build():
        envs = cartpole(4)
        agent = make_agent(envs, seed=3, obs_norm=None)
        factory = (functools.partial(torch.optim.Adam, lr=1e-3) if opt == "adam"
                   else (lambda p: KLAdaptive(torch.optim.Adam(p, lr=1e-3), target_kl=0.01)))
        return PPO(envs, agent, factory, num_steps=16, num_minibatches=2, update_epochs=2,
                   anneal_lr=opt == "adam", total_timesteps=4 * 16 * 6, reset_every=3, seed=5)

    a = build()
    _run(a, 3)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    tail = _run(a, 3)

    buf.seek(0)
    b = build()
    b.load_state_dict(torch.load(buf, weights_only=True))
    np.testing.assert_equal(_run(b, 3), tail)  # NaN == NaN here (no episode finished)
    for p, q in zip(a.agent.parameters(), b.agent.parameters()):
        assert torch.equal(p, q)


def test_same_seed_same_run_and_no_global_rng_use():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    runs = []
    for _ in range(2):
        envs = cartpole(4)
        ppo = PPO(envs, make_agent(envs, seed=1), num_steps=8, seed=9)
        runs.append(_run(ppo, 2))
    np.testing.assert_equal(runs[0], runs[1])
    assert torch.equal(torch.random.get_rng_state(), before)


def test_bootstraps_truncated_episodes():
    # CartPole truncated after 5 steps with a constant value 10: every step's return target
    # includes the bootstrap gamma^k * 10, and the reset step after the truncation is dropped
    envs = gym.make_vec("CartPole-v1", num_envs=1, vectorization_mode="vector_entry_point",
                        max_episode_steps=5)

    class ConstValue(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.logits = torch.nn.Parameter(torch.zeros(2))

        def distribution(self, obs):
            return torch.distributions.Categorical(logits=self.logits.expand(obs.shape[0], 2))

        def value(self, obs):
            return torch.full(obs.shape[:-1], 10.0)

    ppo = PPO(envs, ConstValue(), num_steps=6, gamma=0.5, gae_lambda=1.0, update_epochs=1,
              num_minibatches=1)
    ppo._reset_envs()
    b = ppo._collect()
    if b["valid"].all():  # the pole fell before the limit: not this test's case
        pytest.skip("episode terminated early")
    # steps 0..4 form the truncated episode: G_t = sum_{k<5-t} 0.5^k + 0.5^(5-t) * 10
    G = [sum(0.5 ** k for k in range(5 - t)) + 0.5 ** (5 - t) * 10 for t in range(5)]
    np.testing.assert_allclose(b["returns"][:5, 0].numpy(), G, rtol=1e-6)
    assert b["valid"][:, 0].tolist() == [True] * 5 + [False]


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_steps=0), "Invalid num_steps: 0"),
    (dict(gamma=1.5), "Invalid gamma: 1.5"),
    (dict(gae_lambda=-0.1), "Invalid gae_lambda"),
    (dict(clip_coef=0.0), "Invalid clip_coef: 0.0"),
    (dict(ent_coef=-0.01), "Invalid ent_coef"),
    (dict(max_grad_norm=0.0), "Invalid max_grad_norm"),
    (dict(num_minibatches=1000, num_steps=4),
     r"Invalid num_minibatches: 1000 \(expected <= num_envs"),
    (dict(update_epochs=0), "Invalid update_epochs"),
    (dict(target_kl=-1.0), "Invalid target_kl"),
])
def test_bad_hyperparameters(kwargs, match):
    envs = cartpole(2)
    with pytest.raises(ValueError, match=match):
        PPO(envs, make_agent(envs, 0), **kwargs)


def test_bad_envs_agents_and_optimizers():
    envs = cartpole(2)
    agent = make_agent(envs, 0)
    with pytest.raises(ValueError, match="Invalid envs: CartPoleEnv"):
        PPO(gym.make("CartPole-v1").unwrapped, agent)
    with pytest.raises(ValueError, match="Invalid agent: MLPPolicy has no value"):
        PPO(envs, make_policy(envs, "mlp", stochastic=True))
    with pytest.raises(ValueError, match="its parameters are not the agent's"):
        PPO(envs, agent, torch.optim.Adam(make_agent(envs, 1).parameters()))
    with pytest.raises(ValueError, match="Invalid optimizer: 3"):
        PPO(envs, agent, 3)
    with pytest.raises(ValueError, match="not a PPO state_dict"):
        PPO(envs, agent).load_state_dict({"algorithm": "Reinforce"})
