import io
import math
import os
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rl.normalization import RunningNorm
from rl.policies import make_policy
from rl.rollout import WORST_RETURN, PopulationRollout

from ._envs import NonFiniteObservations, TargetEnv


def _reference_returns(env_id, policy, flat_members, seeds, **make_kw):
    """Each member alone in gymnasium.make(env_id) with the given seeds: the plain loop."""
    out = np.zeros(seeds.shape)
    saved = [p.detach().clone() for p in policy.parameters()]
    for i, flat in enumerate(flat_members):
        nn.utils.vector_to_parameters(flat.clone(), policy.parameters())
        for k, s in enumerate(seeds[i]):
            env = gym.make(env_id, **make_kw)
            obs, _ = env.reset(seed=int(s))
            done, ret = False, 0.0
            while not done:
                obs, r, term, trunc, _ = env.step(policy.predict(obs))
                ret += r
                done = term or trunc
            out[i, k] = ret
    with torch.no_grad():
        for p, v in zip(policy.parameters(), saved):
            p.copy_(v)
    return out


def _pop(policy, P, scale, seed=0, dtype=torch.float32):
    D = sum(p.numel() for p in policy.parameters())
    return torch.randn(P, D, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale


@pytest.mark.parametrize("vectorization", ["native", "sync"])
def test_cartpole_rollout_equals_each_member_alone_in_gymnasium(vectorization):
    policy = make_policy(gym.make("CartPole-v1"), kind="mlp", hidden=(8,))
    pop = _pop(policy, 5, 0.7)
    ro = PopulationRollout("CartPole-v1", policy, 5, episodes_per_member=2, seed=11,
                           vectorization=vectorization)
    assert ro.native == (vectorization == "native")
    losses = ro(pop)
    seeds = ro.last.seeds.numpy()
    ref = _reference_returns("CartPole-v1", policy, pop, seeds)
    assert np.array_equal(ro.last.episode_returns.numpy(), ref)
    assert torch.equal(losses, -torch.from_numpy(ref.mean(1)))
    assert ro.last.lengths.sum().item() == ro.last.num_steps == ro.total_steps == ref.sum()
    assert len(set(seeds.reshape(-1).tolist())) == 10
    assert ref.max() > ref.min()  # the members differ


@pytest.mark.parametrize("env_id, scale", [("Pendulum-v1", 1.0), ("InvertedPendulum-v5", 0.3)])
def test_continuous_rollout_equals_each_member_alone_in_gymnasium(env_id, scale):
    # float64 policy: batched and single matmuls then agree to the last bit on these sizes
    policy = make_policy(gym.make(env_id), kind="mlp", hidden=(8,)).double()
    pop = _pop(policy, 4, scale, seed=1, dtype=torch.float64)
    ro = PopulationRollout(env_id, policy, 4, seed=5, max_episode_steps=60)
    losses = ro(pop)
    ref = _reference_returns(env_id, policy, pop, ro.last.seeds.numpy(), max_episode_steps=60)
    assert np.array_equal(ro.last.episode_returns.numpy(), ref)
    assert torch.equal(losses, -torch.from_numpy(ref[:, 0]))


def test_nan_member_gets_the_worst_return_and_the_others_are_unaffected():
    policy = make_policy(gym.make("Pendulum-v1"), kind="linear")
    pop = _pop(policy, 4, 1.0, seed=2)
    ro = PopulationRollout("Pendulum-v1", policy, 4, seed=3, max_episode_steps=50)
    clean = ro(pop).clone()
    bad = pop.clone()
    bad[2, 0] = math.nan
    ro.generation = 0  # same seeds again
    with pytest.warns(RuntimeWarning, match="1 of 4 members failed"):
        losses = ro(bad)
    assert losses[2].item() == -WORST_RETURN == math.inf
    assert ro.last.failed.tolist() == [False, False, True, False]
    assert torch.equal(losses[[0, 1, 3]], clean[[0, 1, 3]])
    assert math.isnan(ro.last.episode_returns[2, 0].item())
    # every member NaN: the rollout completes, the optimizer refuses the generation
    import evoopt

    opt = evoopt.PGPE(policy.parameters(), popsize=4, sigma=0.1, seed=0)
    opt.ask()
    with pytest.warns(RuntimeWarning, match="4 of 4 members failed"):
        all_bad = ro(torch.full_like(pop, math.nan))
    assert torch.isinf(all_bad).all()
    mean_before = opt.mean.clone()
    with pytest.raises(ValueError, match="all 4 losses"):
        opt.tell(all_bad)
    assert torch.equal(opt.mean, mean_before)


class _RaiseOnStep(gym.Wrapper):
    """Raises in step 3 of an episode started from one particular seed."""

    bad_seed = None

    def reset(self, *, seed=None, options=None):
        self._seed, self._t = seed, 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        self._t += 1
        if self._seed == self.bad_seed and self._t == 3:
            raise RuntimeError("simulator blew up")
        return self.env.step(action)


def test_env_raising_in_step_fails_that_member_only_and_the_generation_completes():
    policy = make_policy(gym.make("CartPole-v1"), kind="linear")
    pop = _pop(policy, 6, 0.5, seed=4)
    ro = PopulationRollout(lambda: _RaiseOnStep(gym.make("CartPole-v1")), policy, 6, seed=9)
    _RaiseOnStep.bad_seed = int(ro.generation_seeds(0)[4, 0])
    broken = ro.pool.singles(6)[4]
    with pytest.warns(RuntimeWarning, match="simulator blew up"):
        losses = ro(pop)
    assert ro.pool.envs[4] is not broken  # replaced by a fresh env
    assert ro.last.failed.tolist() == [False] * 4 + [True, False]
    assert losses[4].item() == math.inf
    ref = _reference_returns("CartPole-v1", policy, pop, ro.last.seeds.numpy())
    keep = [0, 1, 2, 3, 5]
    assert torch.equal(losses[keep], -torch.from_numpy(ref[keep, 0]))
    # and the next generation runs normally
    _RaiseOnStep.bad_seed = None
    assert torch.isfinite(ro(pop)).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(env="CartPol-v1"),
         r"unknown Gymnasium id 'CartPol-v1'; close matches: .*CartPole-v1"),
        (dict(env="NoSuchThing-v0"), r"unknown Gymnasium id 'NoSuchThing-v0'"),
        (dict(env=3), "Invalid env: 3"),
        (dict(popsize=0), "Invalid popsize: 0"),
        (dict(episodes_per_member=0), "Invalid episodes_per_member: 0"),
        (dict(action_noise=-0.1), "Invalid action_noise: -0.1"),
        (dict(action_noise=0.1), "only Box action spaces"),
        (dict(vectorization="async"), "Invalid vectorization: 'async'"),
        (dict(env="Pendulum-v1", vectorization="native"), "Invalid vectorization: 'native'"),
        (dict(max_episode_steps=0), "Invalid max_episode_steps: 0"),
        (dict(worst_return=math.nan), "Invalid worst_return"),
        (dict(maximize="yes"), "Invalid maximize: 'yes'"),
        (dict(reward_shift=math.inf), "Invalid reward_shift: inf"),
        (dict(seed=-1), r"Invalid seed: -1 \(expected an integer >= 0\)"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    kw = dict(env="CartPole-v1", popsize=4)
    kw.update(kwargs)
    policy = make_policy(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match=match):
        PopulationRollout(kw.pop("env"), policy, kw.pop("popsize"), **kw)


def test_population_must_match_the_policy():
    policy = make_policy(gym.make("CartPole-v1"))
    ro = PopulationRollout("CartPole-v1", policy, 4)
    with pytest.raises(ValueError, match=r"expected \[P, 10\]"):
        ro(torch.zeros(4, 9))
    with pytest.raises(ValueError, match="3 members"):
        ro(torch.zeros(3, 10))


def test_obs_normalizer_is_updated_from_all_members_observations():
    policy = make_policy(gym.make("CartPole-v1"), kind="linear", obs_norm=True)
    pop = _pop(policy, 5, 1.0, seed=6)
    ro = PopulationRollout("CartPole-v1", policy, 5, seed=2, episodes_per_member=2)
    ro(pop)
    # reference: every observation each member acted on, in a plain loop (norm frozen: identity)
    rows = []
    for i in range(5):
        nn.utils.vector_to_parameters(pop[i].clone(), policy.parameters())
        for s in ro.last.seeds[i].tolist():
            env = gym.make("CartPole-v1")
            obs, _ = env.reset(seed=s)
            done = False
            while not done:
                rows.append(obs.astype(np.float64))
                with torch.no_grad():
                    a = int(policy.layers[0](torch.from_numpy(obs)).argmax())
                obs, _, term, trunc, _ = env.step(a)
                done = term or trunc
    rows = np.stack(rows)
    assert policy.obs_norm.count.item() == len(rows) == ro.last.num_steps
    np.testing.assert_allclose(policy.obs_norm.mean.numpy(), rows.mean(0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(policy.obs_norm.var.numpy(), rows.var(0), rtol=1e-10)
    before = policy.obs_norm.stats()
    ro.evaluate_center(num_episodes=3, seed=0)  # evaluation never updates the statistics
    assert torch.equal(policy.obs_norm.count, before["count"])


def _acted_on(make_env, policy, flat, seed):
    """The observations one member acts on in one episode, in a plain gymnasium loop."""
    nn.utils.vector_to_parameters(flat.clone(), policy.parameters())
    env = make_env()
    obs, _ = env.reset(seed=seed)
    rows, done = [], False
    while not done:
        rows.append(np.asarray(obs, dtype=np.float64))
        obs, _, term, trunc, _ = env.step(policy.predict(obs))
        done = term or trunc
    return rows


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_observations_and_failed_members_do_not_feed_the_normaliser(value):
    """Issue 12 item 15: one NaN observation made the shared mean NaN and every later
    generation fail. NaN: the member fails and none of its observations count; inf (clipped
    by the normaliser, so the member acts and does not fail): only the inf rows are dropped."""
    def make():
        return NonFiniteObservations(gym.make("CartPole-v1"), rate=0.05, value=value)

    P, K = 8, 2
    policy = make_policy(make(), kind="linear", obs_norm=RunningNorm(4, clip=5.0))
    reference = make_policy(make(), kind="linear", obs_norm=RunningNorm(4, clip=5.0))
    pop = _pop(policy, P, 1.0, seed=3)
    ro = PopulationRollout(make, policy, P, seed=4, episodes_per_member=K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "... members failed"
        ro(pop)
    # the reference: each slot's episode alone, its rows in the rollout's order (step-major)
    episodes = [_acted_on(make, reference, pop[i], s)
                for i in range(P) for s in ro.last.seeds[i].tolist()]
    bad = np.array([any(not np.isfinite(r).all() for r in ep) for ep in episodes]).reshape(P, K)
    assert bad.any()
    failed = bad.any(1) if math.isnan(value) else np.zeros(P, bool)
    assert np.array_equal(ro.last.failed.numpy(), failed)
    assert not failed.all()
    keep = ~failed.repeat(K)
    rows = [ep[t] for t in range(max(map(len, episodes))) for j, ep in enumerate(episodes)
            if keep[j] and t < len(ep) and np.isfinite(ep[t]).all()]
    expected = RunningNorm(4)
    expected.update(torch.from_numpy(np.stack(rows)))
    for key, v in expected.stats().items():
        assert torch.equal(policy.obs_norm.stats()[key], v), key
    with warnings.catch_warnings():  # later generations run on finite statistics
        warnings.simplefilter("ignore", RuntimeWarning)
        losses = [ro(pop) for _ in range(2)]
    assert all(torch.isfinite(x).sum() >= P // 2 for x in losses)
    assert torch.isfinite(policy.obs_norm.mean).all() and policy.obs_norm.count > expected.count


def test_envs_are_built_once_and_evaluation_batches_reuse_them():
    """Issue 12 item 18: one env per slot, reused by every generation and evaluation; an
    evaluation longer than the pool runs in batches with the numbers of a single batch."""
    built = []

    def make():
        built.append(1)
        return gym.make("Pendulum-v1", max_episode_steps=30)

    policy = make_policy(make(), kind="mlp", hidden=(8,), obs_norm=True)
    built.clear()
    P = 4
    ro = PopulationRollout(make, policy, P, seed=3)
    for g in range(3):
        ro(_pop(policy, P, 0.5, seed=g))
    assert len(built) == P
    batched = ro.evaluate_center(num_episodes=25, seed=50)
    ro.evaluate_center(num_episodes=25)
    assert len(built) == 10  # max(popsize * episodes_per_member, 10): 3 batches of 25 episodes
    one_batch = PopulationRollout(make, policy, 25).evaluate_center(num_episodes=25, seed=50)
    assert torch.equal(batched, one_batch)


def test_what_envs_print_on_stderr_while_built_appears_once(capfd):
    line = f"WARNING: a native message {id(capfd)}"

    def make():
        os.write(2, (line + "\n").encode())
        return TargetEnv()

    for _ in range(2):
        ro = PopulationRollout(make, make_policy(TargetEnv(), kind="linear"), 5)
        ro(torch.zeros(5, 3))
        ro.evaluate_center(num_episodes=12, seed=0)
    assert capfd.readouterr().err.count(line) == 1


def test_mujoco_compiler_warning_appears_at_most_once(capfd):
    pytest.importorskip("mujoco")
    policy = make_policy("HalfCheetah-v5", kind="linear")
    ro = PopulationRollout("HalfCheetah-v5", policy, 4, max_episode_steps=5)
    ro(torch.zeros(4, policy.obs_dim * 6 + 6))
    ro.evaluate_center(num_episodes=12, seed=0)
    assert capfd.readouterr().err.count("settotalmass") <= 1


def test_resume_from_state_dict_continues_exactly():
    def make():
        torch.manual_seed(0)
        policy = make_policy(gym.make("Pendulum-v1"), kind="linear", obs_norm=True)
        return policy, PopulationRollout("Pendulum-v1", policy, 4, seed=7, max_episode_steps=40,
                                         action_noise=0.05)
    pops = [_pop(make()[0], 4, 0.5, seed=s) for s in range(3)]
    policy, ro = make()
    full = [ro(p) for p in pops]
    policy2, ro2 = make()
    ro2(pops[0])
    ro2(pops[1])
    buf = io.BytesIO()
    torch.save({"rollout": ro2.state_dict(), "policy": policy2.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    policy3, ro3 = make()
    policy3.load_state_dict(ck["policy"])
    ro3.load_state_dict(ck["rollout"])
    assert torch.equal(ro3(pops[2]), full[2])
    assert torch.equal(policy3.obs_norm.mean, policy.obs_norm.mean)
    assert ro3.total_steps == ro.total_steps and ro3.generation == 3
    with pytest.raises(ValueError, match="saved popsize=4"):
        PopulationRollout("Pendulum-v1", policy3, 6).load_state_dict(ck["rollout"])


def test_evaluate_center_equals_gymnasium_loop_with_seed_plus_j():
    policy = make_policy(gym.make("CartPole-v1"), kind="linear")
    center = _pop(policy, 1, 0.5, seed=8)[0]
    nn.utils.vector_to_parameters(center.clone(), policy.parameters())
    ro = PopulationRollout("CartPole-v1", policy, 3, seed=1)
    got = ro.evaluate_center(num_episodes=6, seed=100)
    ref = _reference_returns("CartPole-v1", policy, center[None], np.arange(100, 106)[None])
    assert np.array_equal(got.numpy(), ref[0])
    assert torch.equal(ro.evaluate_center(center * 1.0, num_episodes=6, seed=100), got)
    # fresh seeds each call
    a, b = ro.evaluate_center(num_episodes=4), ro.evaluate_center(num_episodes=4)
    assert ro.num_evaluations == 4 and a.shape == b.shape == (4,)
    # a policy module is evaluated as it is, with its own normaliser
    saved = make_policy(gym.make("CartPole-v1"), kind="linear", obs_norm=True)
    saved.obs_norm.update(torch.randn(50, 4, dtype=torch.float64) * 0.2)
    nn.utils.vector_to_parameters(center.clone() * 3, saved.parameters())
    ref = _reference_returns("CartPole-v1", saved, [center * 3], np.arange(7, 12)[None])
    assert np.array_equal(ro.evaluate_center(saved, num_episodes=5, seed=7).numpy(), ref[0])
    with pytest.raises(ValueError, match=r"Invalid params: 3 numbers \(expected 10"):
        ro.evaluate_center(torch.zeros(3))
    with pytest.raises(ValueError, match="Invalid num_episodes: 0"):
        ro.evaluate_center(num_episodes=0)


def test_reward_shift_common_seeds_and_action_noise():
    policy = make_policy(gym.make("Pendulum-v1"), kind="linear")
    pop = _pop(policy, 4, 0.5, seed=3)
    ro = PopulationRollout("Pendulum-v1", policy, 4, seed=0, max_episode_steps=30,
                           reward_shift=-1.0, common_seeds=True)
    losses = ro(pop)
    seeds = ro.last.seeds
    assert (seeds == seeds[0]).all()
    torch.testing.assert_close(-losses, ro.last.episode_returns[:, 0] - 30.0, rtol=0, atol=1e-9)
    noisy = [PopulationRollout("Pendulum-v1", policy, 4, seed=0, max_episode_steps=30,
                               action_noise=0.3)
             for _ in range(2)]
    plain = PopulationRollout("Pendulum-v1", policy, 4, seed=0, max_episode_steps=30)
    n1, n2, p0 = noisy[0](pop), noisy[1](pop), plain(pop)
    assert torch.equal(n1, n2) and not torch.equal(n1, p0)
    up = PopulationRollout("Pendulum-v1", policy, 4, seed=0, max_episode_steps=30, maximize=True)
    assert torch.equal(up(pop), -p0)  # returns, for an optimizer with maximize=True


class _CustomLinear(nn.Module):
    """Not an rl Policy: exercises the torch.func.vmap path."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, obs):
        return self.fc(obs)


def test_any_module_runs_through_vmap_and_matches_the_fast_path():
    custom = _CustomLinear()
    policy = make_policy(gym.make("CartPole-v1"), kind="linear")
    pop = _pop(policy, 6, 1.0, seed=12)  # same layout: weight [2, 4] then bias [2]
    a = PopulationRollout("CartPole-v1", custom, 6, seed=4)(pop)
    b = PopulationRollout("CartPole-v1", policy, 6, seed=4)(pop)
    assert torch.equal(a, b)


def test_population_from_an_optimizer_over_some_parameters_keeps_the_others():
    import evoopt

    policy = make_policy(gym.make("CartPole-v1"), kind="mlp", hidden=(6,))
    head = list(policy.layers[1].parameters())
    opt = evoopt.PGPE([("layers.1.weight", head[0]), ("layers.1.bias", head[1])], popsize=6,
                      sigma=1.0, seed=0)
    pop = opt.ask()
    body = torch.cat([p.detach().reshape(-1) for p in policy.layers[0].parameters()])
    full = torch.cat([body.expand(6, -1), pop.flat], dim=1)  # policy.parameters() order
    a = PopulationRollout("CartPole-v1", policy, 6, seed=3)(pop)
    b = PopulationRollout("CartPole-v1", policy, 6, seed=3)(full)
    assert torch.equal(a, b)
    other = nn.Linear(2, 2)
    opt2 = evoopt.PGPE(list(other.parameters()), popsize=6, seed=0)
    with pytest.raises(ValueError, match="is not a parameter of the policy"):
        PopulationRollout("CartPole-v1", policy, 6)(opt2.ask())


class _BrokenVector:
    """Stands in for the native vector env and raises in step."""

    def __init__(self, venv):
        self.venv = venv
        self.unwrapped = venv.unwrapped

    def reset(self, **kw):
        return self.venv.reset(**kw)

    def step(self, action):
        raise RuntimeError("vector env broke")


def test_native_env_failure_falls_back_to_single_envs_with_the_same_numbers():
    policy = make_policy(gym.make("CartPole-v1"), kind="linear", obs_norm=True)
    pop = _pop(policy, 4, 1.0, seed=5)
    ro = PopulationRollout("CartPole-v1", policy, 4, seed=2)
    ro.pool.native[4] = _BrokenVector(ro.pool.vector(4))
    with pytest.warns(RuntimeWarning, match="vector env broke"):
        losses = ro(pop)
    assert not ro.native
    policy2 = make_policy(gym.make("CartPole-v1"), kind="linear", obs_norm=True)
    ref = PopulationRollout("CartPole-v1", policy2, 4, seed=2, vectorization="sync")
    assert torch.equal(losses, ref(pop))
    assert torch.equal(policy.obs_norm.count, policy2.obs_norm.count)  # counted once
    assert torch.equal(policy.obs_norm.m2, policy2.obs_norm.m2)
