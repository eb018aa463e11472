import io
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from rl.normalization import RunningNorm
from rl.policies import ActorCritic, LinearPolicy, MLPPolicy, Policy, make_policy

BOX = spaces.Box(low=np.array([-2.0, 0.0], dtype=np.float32),
                 high=np.array([2.0, 1.0], dtype=np.float32))


def test_make_policy_for_cartpole_is_a_zero_linear_argmax_policy():
    env = gym.make("CartPole-v1")
    p = make_policy(env, kind="linear")
    assert isinstance(p, LinearPolicy)
    assert sum(t.numel() for t in p.parameters()) == 4 * 2 + 2
    assert all((t == 0).all() for t in p.parameters())  # ARS: the first policy is M = 0
    with torch.no_grad():
        p.layers[0].weight.copy_(torch.tensor([[0.0, 0.0, -1.0, 0.0], [0.0, 0.0, 1.0, 0.0]]))
    obs = torch.tensor([[0.0, 0.0, 0.1, 0.0], [0.0, 0.0, -0.1, 0.0]])
    assert p.act(obs).tolist() == [1, 0]
    assert p.predict(np.array([0.0, 0.0, 0.1, 0.0], dtype=np.float32)) == 1


def test_discrete_start_offset_is_added_in_to_env():
    p = Policy(3, spaces.Discrete(4, start=-1), init="torch")
    out = p(torch.randn(6, 3))
    a = p.action_from_output(out)
    assert torch.equal(a, out.argmax(-1) - 1)


def test_box_actions_are_clipped_or_tanh_squashed_into_the_bounds():
    raw = torch.tensor([[-5.0, 0.5], [1.0, 3.0], [0.0, -1.0]])
    clip = Policy(3, BOX, squash="clip")
    torch.testing.assert_close(clip.to_env(raw),
                               torch.tensor([[-2.0, 0.5], [1.0, 1.0], [0.0, 0.0]]))
    tanh = Policy(3, BOX, squash="tanh")
    low, high = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0])
    torch.testing.assert_close(tanh.to_env(raw), low + (torch.tanh(raw) + 1) / 2 * (high - low))
    assert tanh.to_env(torch.zeros(2)).tolist() == [0.0, 0.5]
    none = Policy(3, BOX, squash="none")  # ARS: the raw action goes to the env
    assert torch.equal(none.to_env(raw), raw)
    with torch.no_grad():
        none.layers[0].weight.copy_(torch.tensor([[3.0, 0.0, 0.0], [0.0, -2.0, 0.0]]))
    assert none.predict(np.array([1.0, 1.0, 0.0], dtype=np.float32)).tolist() == [3.0, -2.0]
    assert (Policy(3, spaces.Box(-np.inf, np.inf, (2,)), squash="none").to_env(raw).tolist()
            == raw.tolist())


def test_gaussian_log_prob_and_entropy_match_the_formula():
    p = MLPPolicy(3, BOX, hidden=(16,), stochastic=True, log_std_init=-0.5, init="torch")
    obs = torch.randn(10, 3)
    a = torch.randn(10, 2)
    mu, log_std = p(obs), p.log_std
    expected = (-0.5 * ((a - mu) / log_std.exp()) ** 2 - log_std
                - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(p.log_prob(obs, a), expected)
    torch.testing.assert_close(p.entropy(obs),
                               (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum().expand(10))
    p.log_prob(obs, a).sum().backward()
    assert p.log_std.grad is not None and p.layers[0].weight.grad is not None


def test_gaussian_samples_are_reproducible_and_have_the_right_moments():
    p = LinearPolicy(3, BOX, stochastic=True, log_std_init=math.log(0.3))
    with torch.no_grad():
        p.layers[0].bias.copy_(torch.tensor([0.5, -0.25]))
    obs = torch.zeros(20000, 3)
    a1 = p.act(obs, generator=torch.Generator().manual_seed(1))
    a2 = p.act(obs, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a1, a2)
    torch.testing.assert_close(a1.mean(0), torch.tensor([0.5, -0.25]), atol=0.01, rtol=0)
    torch.testing.assert_close(a1.std(0), torch.tensor([0.3, 0.3]), atol=0.01, rtol=0)
    torch.testing.assert_close(p.act(obs[:3], deterministic=True), torch.tensor([[0.5, -0.25]] * 3))


def test_categorical_samples_follow_softmax():
    p = LinearPolicy(2, spaces.Discrete(3), stochastic=True)
    with torch.no_grad():
        p.layers[0].bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    a = p.act(torch.zeros(30000, 2), generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(a, minlength=3).double() / a.numel()
    torch.testing.assert_close(freq, torch.softmax(torch.tensor([0.0, 1.0, -1.0]), 0).double(),
                               atol=0.01, rtol=0)
    logp = p.log_prob(torch.zeros(3, 2), torch.tensor([0, 1, 2]))
    torch.testing.assert_close(logp, torch.log_softmax(torch.tensor([0.0, 1.0, -1.0]), 0))


def _members(policy, P, gen):
    return {n: torch.randn(P, *t.shape, generator=gen, dtype=t.dtype)
            for n, t in policy.named_parameters()}


@pytest.mark.parametrize("hidden", [(), (16, 8)])
def test_population_forward_and_vmap_equal_per_member_forward(hidden):
    norm = RunningNorm(5)
    norm.update(torch.randn(50, 5, dtype=torch.float64) * 3 + 1)
    p = Policy(5, BOX, hidden=hidden, obs_norm=norm).double()
    P = 7
    gen = torch.Generator().manual_seed(0)
    params = _members(p, P, gen)
    obs = torch.randn(P, 5, generator=gen, dtype=torch.float64) * 3
    fast = p.population_forward(params, obs)
    call = lambda prm, o: torch.func.functional_call(p, prm, (o,))  # noqa: E731
    vmapped = torch.func.vmap(call)(params, obs)
    loop = torch.stack([call({n: t[i] for n, t in params.items()}, obs[i]) for i in range(P)])
    torch.testing.assert_close(fast, loop, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(vmapped, loop, rtol=1e-12, atol=1e-12)


def test_actor_critic_has_a_separate_critic_and_saves_its_normalizer():
    env = gym.make("Pendulum-v1")
    ac = make_policy(env, kind="mlp", hidden=(32, 32), actor_critic=True, obs_norm=True)
    assert isinstance(ac, ActorCritic) and ac.stochastic and ac.log_std is not None
    actor_ids = {id(t) for t in ac.layers.parameters()}
    assert not actor_ids & {id(t) for t in ac.critic.parameters()}
    ac.obs_norm.update(torch.randn(100, 3, dtype=torch.float64))
    obs = torch.randn(9, 3)
    v = ac.value(obs)
    assert v.shape == (9,)
    v.sum().backward()
    assert ac.critic[0].weight.grad is not None and ac.layers[0].weight.grad is None
    buf = io.BytesIO()
    torch.save(ac.state_dict(), buf)
    buf.seek(0)
    other = make_policy(env, kind="mlp", hidden=(32, 32), actor_critic=True, obs_norm=True)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert other.obs_norm.count.item() == 100 and other.obs_norm.mean.dtype == torch.float64
    a = torch.randn(9, 1)
    torch.testing.assert_close(other.log_prob(obs, a), ac.log_prob(obs, a))
    torch.testing.assert_close(other.value(obs), ac.value(obs))


def test_mlp_initialisation_is_orthogonal_with_small_output_gain():
    p = MLPPolicy(8, spaces.Discrete(3), hidden=(64, 64))
    w0 = p.layers[0].weight.detach()
    torch.testing.assert_close(w0.T @ w0, 2.0 * torch.eye(8), atol=1e-4, rtol=0)  # gain sqrt(2)
    w_out = p.layers[-1].weight.detach()
    torch.testing.assert_close(w_out @ w_out.T, 1e-4 * torch.eye(3), atol=1e-7, rtol=0)
    assert all((layer.bias == 0).all() for layer in p.layers)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Policy(0, BOX), "Invalid obs_dim: 0"),
        (lambda: Policy(3, spaces.MultiBinary(2)), "Invalid action_space: MultiBinary"),
        (lambda: Policy(3, BOX, activation="sigmoid"), "Invalid activation: 'sigmoid'"),
        (lambda: Policy(3, BOX, squash="sin"),
         r"Invalid squash: 'sin' \(expected 'clip', 'tanh' or 'none'\)"),
        (lambda: Policy(3, spaces.Box(-np.inf, np.inf, (2,)), squash="tanh"),
         "needs finite bounds"),
        (lambda: Policy(3, BOX, hidden=(4, 0)), "Invalid hidden"),
        (lambda: Policy(3, BOX, init="xavier"), "Invalid init: 'xavier'"),
        (lambda: Policy(3, BOX, obs_norm=RunningNorm(4)), r"Invalid obs_norm: shape \(4,\)"),
        (lambda: Policy(3, BOX).distribution(torch.zeros(3)), "deterministic"),
        (lambda: MLPPolicy(3, BOX, hidden=()), "at least one hidden layer"),
        (lambda: make_policy(gym.make("CartPole-v1"), kind="cnn"), "Invalid kind: 'cnn'"),
        (lambda: make_policy(object()), "Invalid env_or_spaces"),
        (lambda: ActorCritic(3, BOX, stochastic=False), "Invalid stochastic for ActorCritic"),
    ],
)
def test_bad_input_raises(make, match):
    with pytest.raises(ValueError, match=match):
        make()
