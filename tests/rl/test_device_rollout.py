"""PopulationRollout on the device backends (``backend="torch"``), run on the CPU."""

import functools
import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import rl.device_rollout as device_rollout_module
from rl import envs as device_envs
from rl.actor import DeviceActor, member_params
from rl.device_rollout import SlotObsStats, device_rollout, resolve_backend
from rl.normalization import RunningNorm
from rl.policies import make_policy
from rl.rollout import PopulationRollout, _add_obs_rows

from . import test_pgpe_cartpole


def _policy(env_id="CartPole-v1", dtype=torch.float64, obs_norm=False, hidden=()):
    policy = make_policy(gym.make(env_id), kind="linear" if not hidden else "mlp",
                         hidden=hidden or (64, 64), obs_norm=obs_norm)
    return policy.to(dtype)


def _rows(policy, P, scale=1.0, seed=0):
    D = sum(p.numel() for p in policy.parameters())
    g = torch.Generator().manual_seed(seed)
    dtype = next(policy.parameters()).dtype
    return scale * torch.randn(P, D, generator=g, dtype=torch.float64).to(dtype)


# ------------------------------------------------------------------ normaliser
def test_slot_obs_stats_equal_the_numpy_path():
    """Same observations, masks and failed slots: the device statistics equal those of the
    gymnasium path's ``_add_obs_rows`` + ``RunningNorm`` (Chan merges of two-pass batches)."""
    g = torch.Generator().manual_seed(0)
    T, M, d = 60, 12, 5
    obs = 3.0 + 2.0 * torch.randn(T, M, d, generator=g, dtype=torch.float64)
    obs[7, 3, 1] = math.nan  # a non-finite row is dropped by both
    alive = torch.rand(T, M, generator=g) < 0.8
    keep = torch.ones(M, dtype=torch.bool)
    keep[[2, 9]] = False  # failed members' rows are dropped by both
    shift = torch.tensor([2.5, 3.0, 3.5, 2.0, 1.0], dtype=torch.float64)
    stats = SlotObsStats(M, d, shift)
    chunks = []
    for t in range(T):
        stats.add(obs[t] - shift, alive[t])
        chunks.append((obs[t][alive[t]].numpy(), np.flatnonzero(alive[t].numpy())))
    reference = RunningNorm(d)
    _add_obs_rows(reference, chunks, keep.numpy())
    got = stats.stats(keep)
    assert float(got["count"]) == float(reference.count)
    torch.testing.assert_close(got["mean"], reference.mean, rtol=1e-12, atol=0)
    torch.testing.assert_close(got["m2"], reference.m2, rtol=1e-10, atol=0)


def test_normaliser_update_counts_the_live_steps_of_members_that_did_not_fail():
    policy = _policy(obs_norm=True)
    objective = PopulationRollout("CartPole-v1", policy, 6, backend="torch", seed=3)
    rows = _rows(policy, 6)
    rows[4] = math.nan
    with pytest.warns(RuntimeWarning, match="1 of 6 members failed"):
        objective(rows)
    last = objective.last
    assert last.failed.tolist() == [False] * 4 + [True, False]
    assert float(policy.obs_norm.count) == float(last.lengths[~last.failed].sum())
    assert bool(torch.isfinite(policy.obs_norm.mean).all())


# ------------------------------------------------------- the same physics, return
def _gym_return(env_id, policy, seed):
    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    ret, done = 0.0, False
    while not done:
        obs, r, term, trunc, _ = env.step(policy.predict(obs))
        ret += float(r)
        done = term or trunc
    return ret


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_same_state_same_policy_same_return_as_gymnasium(env_id):
    """Set the device env's slots to Gymnasium's initial states for seeds 0..M-1, roll the
    same deterministic policy: the returns agree to 1e-6 (float64)."""
    torch.manual_seed(0)
    policy = _policy(env_id)
    with torch.no_grad():
        for p in policy.parameters():
            p.normal_(0.0, 0.5)
    M = 5
    states, first_obs = [], []
    for s in range(M):
        env = gym.make(env_id)
        first_obs.append(env.reset(seed=s)[0])
        states.append(np.asarray(env.unwrapped.state, dtype=np.float64))
    env = device_envs.make(env_id, M, dtype=torch.float64, autoreset_mode="disabled")
    env.reset(seed=0)
    env.set_state({"state": torch.as_tensor(np.stack(states))})
    flat = torch.cat([p.detach().reshape(-1) for p in policy.parameters()])
    params = member_params(policy, flat.expand(M, -1))
    obs = torch.as_tensor(np.stack(first_obs), dtype=torch.float64)
    res = device_rollout(env, DeviceActor(policy, env.single_action_space), params, obs,
                         max_steps=env.max_episode_steps)
    expected = [_gym_return(env_id, policy, s) for s in range(M)]
    np.testing.assert_allclose(res["returns"], expected, rtol=1e-6, atol=1e-6)
    assert not res["failed"].any()


# ------------------------------------------------------------- meaning of options
def test_losses_are_deterministic_and_resume_is_exact():
    def run(resume_at=None, generations=4):
        policy = _policy(obs_norm=True)
        objective = PopulationRollout("CartPole-v1", policy, 8, backend="torch", seed=5)
        losses = []
        for g in range(generations):
            if g == resume_at:
                weights = {k: v.clone() for k, v in policy.state_dict().items()}
                saved = objective.state_dict(), weights
                policy = _policy(obs_norm=True)
                policy.load_state_dict(saved[1])
                objective = PopulationRollout("CartPole-v1", policy, 8, backend="torch", seed=0)
                objective.load_state_dict(saved[0])
            losses.append(objective(_rows(policy, 8, seed=g)))
        return torch.stack(losses), policy.obs_norm.stats()

    straight, stats = run()
    resumed, stats_resumed = run(resume_at=2)
    assert torch.equal(straight, resumed)
    for k in stats:
        assert torch.equal(stats[k], stats_resumed[k])
    assert len(set(straight.sum(1).tolist())) > 1  # generations differ


def test_failed_member_gets_worst_return_and_the_others_are_unaffected():
    policy = _policy()
    rows = _rows(policy, 6, seed=1)
    clean = PopulationRollout("CartPole-v1", policy, 6, backend="torch", seed=2)(rows)
    rows[[1, 3]] = math.inf
    objective = PopulationRollout("CartPole-v1", policy, 6, backend="torch", seed=2)
    with pytest.warns(RuntimeWarning, match="2 of 6 members failed"):
        losses = objective(rows)
    assert losses[[1, 3]].tolist() == [math.inf, math.inf]
    keep = [0, 2, 4, 5]
    assert torch.equal(losses[keep], clean[keep])
    assert "NaN or infinite" in objective.last.errors[0]


def test_episodes_per_member_reward_shift_and_maximize():
    policy = _policy()
    rows = _rows(policy, 4, seed=2)
    kw = dict(backend="torch", seed=1, episodes_per_member=3)
    plain = PopulationRollout("CartPole-v1", policy, 4, **kw)
    losses = plain(rows)
    last = plain.last
    assert last.episode_returns.shape == (4, 3)
    torch.testing.assert_close(-losses, last.episode_returns.mean(1), rtol=0, atol=0)
    shifted = PopulationRollout("CartPole-v1", policy, 4, reward_shift=-1.0, maximize=True, **kw)
    returns = shifted(rows)
    assert torch.equal(shifted.last.episode_returns, last.episode_returns)
    expected = (last.episode_returns - last.lengths.double()).mean(1)
    torch.testing.assert_close(returns, expected, rtol=0, atol=1e-12)
    assert float(returns.abs().max()) < 1e-9  # CartPole: reward 1 per step, shift -1
    assert last.episode_returns.std(1).sum() > 0  # a member's episodes start differently


def test_max_episode_steps_and_evaluate_center():
    policy = _policy()
    with torch.no_grad():  # a linear policy that balances: push towards the pole's lean
        policy.layers[0].weight.copy_(torch.tensor([[0.0, 0.0, -1.0, -1.0], [0.0, 0.0, 1.0, 1.0]]))
    objective = PopulationRollout("CartPole-v1", policy, 3, backend="torch", max_episode_steps=40)
    flat = torch.cat([p.detach().reshape(-1) for p in policy.parameters()])
    assert objective(flat.expand(3, -1)).tolist() == [-40.0] * 3
    assert objective.last.lengths.max() == 40
    a = objective.evaluate_center(num_episodes=7, seed=11)
    b = objective.evaluate_center(num_episodes=7, seed=11)
    assert a.shape == (7,) and torch.equal(a, b) and a.tolist() == [40.0] * 7
    fresh = PopulationRollout("CartPole-v1", policy, 3, backend="torch")
    c = fresh.evaluate_center(num_episodes=50)
    assert c.mean() >= 475  # the full time limit, 500


def test_action_noise_is_seeded_per_generation():
    policy = _policy("Pendulum-v1")
    rows = _rows(policy, 4, scale=0.3)
    kw = dict(backend="torch", seed=4)
    noisy = [PopulationRollout("Pendulum-v1", policy, 4, action_noise=0.3, **kw)(rows)
             for _ in range(2)]
    quiet = PopulationRollout("Pendulum-v1", policy, 4, **kw)(rows)
    assert torch.equal(noisy[0], noisy[1])
    assert not torch.equal(noisy[0], quiet)


def test_any_module_through_vmap_equals_the_policy_fast_path():
    policy = _policy("Pendulum-v1", hidden=(8,))
    rows = _rows(policy, 5, scale=0.5)

    class Plain(torch.nn.Module):  # the same network without the Policy fast path
        def __init__(self):
            super().__init__()
            self.layers = policy.layers

        def forward(self, x):
            return policy._body(x)

    fast = PopulationRollout("Pendulum-v1", policy, 5, backend="torch")(rows)
    plain = PopulationRollout("Pendulum-v1", Plain(), 5, backend="torch")(rows)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-9)


# ---------------------------------------------------------------------- errors
def _cartpole_policy():
    return _policy(dtype=torch.float32)


ERRORS = [
    (dict(backend="jax"), ValueError, "Invalid backend: 'jax'"),
    (dict(env="Ant-v5", backend="torch"), ValueError, "MuJoCo envs run on backend='warp'"),
    (dict(backend="warp"), ValueError, "classic-control envs run on backend='torch'"),
    (dict(env="LunarLander-v3", backend="torch"), ValueError,
     "no device implementation|device implementation, got env id 'LunarLander-v3'"),
    (dict(env=lambda: gym.make("CartPole-v1"), backend="torch"), ValueError,
     "got an env constructor.*backend='gymnasium'"),
    (dict(backend="torch", device="cuda"), ValueError,
     r"Invalid device: 'cuda.*' but the policy is on cpu \(move the policy"),
    (dict(backend="torch", device="nonsense"), ValueError, "Invalid device: 'nonsense'"),
    (dict(backend="torch", common_seeds=True), ValueError, "Invalid common_seeds"),
]


@pytest.mark.parametrize("kwargs, error, match", ERRORS)
def test_errors_name_the_fix(kwargs, error, match):
    kwargs = dict(kwargs)
    env = kwargs.pop("env", "CartPole-v1")
    with pytest.raises(error, match=match):
        PopulationRollout(env, _cartpole_policy(), 4, **kwargs)


def test_warp_backend_without_the_extra_names_the_install(monkeypatch):
    monkeypatch.setattr(device_rollout_module, "_warp_installed", lambda: False)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[warp\]"'):
        resolve_backend("Swimmer-v5", "warp")
    assert resolve_backend("Swimmer-v5", "auto") == "gymnasium"
    assert resolve_backend("CartPole-v1", "auto") == "torch"
    assert resolve_backend("LunarLander-v3", "auto") == "gymnasium"


def test_params_on_another_device_than_the_env_are_refused():
    policy = _policy()
    env = device_envs.make("CartPole-v1", 2, dtype=torch.float64, autoreset_mode="disabled")
    obs, _ = env.reset(seed=0)
    params = {k: v.to("meta") for k, v in member_params(policy, _rows(policy, 2)).items()}
    with pytest.raises(ValueError, match=r"is on meta but the env is on cpu \(move the policy"):
        device_rollout(env, DeviceActor(policy, env.single_action_space), params, obs,
                       max_steps=10)


# ------------------------------------------------------------ PGPE on CartPole
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pgpe_solves_cartpole_on_the_torch_backend(seed, monkeypatch):
    """tests/rl/test_pgpe_cartpole.py's run (same hyperparameters, same budget) with
    ``backend="torch"``."""
    torch_rollout = functools.partial(PopulationRollout, backend="torch")
    monkeypatch.setattr(test_pgpe_cartpole, "PopulationRollout", torch_rollout)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no failed member, no silent fallback
        generation, mean_return = test_pgpe_cartpole.solve_cartpole(seed)
    assert generation is not None, f"seed {seed}: center return {mean_return}"
    assert mean_return >= 475


def test_moving_the_live_slots_to_smaller_envs_changes_no_number():
    """``resize`` moves the live slots into envs of 128, 64 ... slots (get_state/set_state)
    once most episodes ended: returns, lengths and statistics are those of the full run."""
    torch.manual_seed(1)
    policy = _policy(obs_norm=True)
    policy.obs_norm.update(0.05 * torch.randn(50, 4, dtype=torch.float64))
    M = 512
    rows = _rows(policy, M, scale=0.7, seed=3)
    params = member_params(policy, rows)
    sizes = []

    def resize(n):
        sizes.append(n)
        return device_envs.make("CartPole-v1", n, dtype=torch.float64, autoreset_mode="disabled")

    results = []
    for factory in (None, resize):
        env = device_envs.make("CartPole-v1", M, dtype=torch.float64, autoreset_mode="disabled")
        obs, _ = env.reset(seed=7)
        results.append(device_rollout(env, DeviceActor(policy, env.single_action_space), params,
                                      obs, max_steps=500, obs_stats=True, group=2,
                                      reward_shift=-0.5, resize=factory))
    full, small = results
    assert sizes and min(sizes) == 64 and max(sizes) <= M // 2
    assert full["lengths"].max() > 100  # some episodes outlive the moves
    for key in ("returns", "shifted", "lengths", "failed"):
        np.testing.assert_array_equal(full[key], small[key])
    for key in ("count", "mean", "m2"):
        torch.testing.assert_close(full["obs_stats"][key], small["obs_stats"][key],
                                   rtol=1e-14, atol=0)


# ------------------------------------------------- the kernel against a plain loop
def _plain_loop_returns(env_id, policy, rows, env_seed, max_steps):
    """Each member alone, one slot at a time, in the same device env batch: the plain loop
    (policy.predict-style forward per member and step) that the kernel must reproduce."""
    P = rows.shape[0]
    env = device_envs.make(env_id, P, autoreset_mode="disabled", max_episode_steps=max_steps)
    obs, _ = env.reset(seed=env_seed)
    saved = [p.detach().clone() for p in policy.parameters()]
    members = []
    for i in range(P):
        torch.nn.utils.vector_to_parameters(rows[i].clone(), policy.parameters())
        members.append([p.detach().clone() for p in policy.parameters()])
    returns, done = torch.zeros(P, dtype=torch.float64), torch.zeros(P, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(max_steps):
            actions = []
            for i in range(P):
                for p, v in zip(policy.parameters(), members[i]):
                    p.copy_(v)
                actions.append(policy.to_env(policy.act(obs[i].double(), deterministic=True)))
            obs, r, term, trunc, _ = env.step(torch.stack(actions))
            returns += torch.where(done, 0.0, r.double())
            done |= term | trunc
        for p, v in zip(policy.parameters(), saved):
            p.copy_(v)
    return returns


@pytest.mark.parametrize("env_id, backend, steps", [
    ("Pendulum-v1", "torch", 200),
    pytest.param("Swimmer-v5", "warp", 12, marks=pytest.mark.slow),
])
def test_kernel_returns_equal_a_plain_loop_over_the_same_envs(env_id, backend, steps):
    if backend == "warp":
        pytest.importorskip("mujoco_warp")
    policy = _policy(env_id, obs_norm=True)
    policy.obs_norm.update(torch.randn(20, policy.obs_dim, dtype=torch.float64))
    P = 3
    rows = _rows(policy, P, scale=0.5, seed=5)
    objective = PopulationRollout(env_id, policy, P, backend=backend, seed=2,
                                  max_episode_steps=steps, update_obs_norm=False)
    losses = objective(rows)
    seeds = objective.generation_seeds(0).reshape(-1).tolist()
    env_seed = int(np.random.SeedSequence(seeds).generate_state(1)[0])
    expected = _plain_loop_returns(env_id, policy, rows, env_seed, steps)
    torch.testing.assert_close(-losses, expected, rtol=1e-5, atol=1e-5)
    assert objective.last.lengths.tolist() == [[steps]] * P


@pytest.mark.slow
def test_compiled_step_gives_the_eager_returns():
    """``compile=True`` (the policy step and the env step fused by torch.compile) plays the
    same episodes as eager, up to the rounding of fused float64 arithmetic."""
    policy = _policy("Pendulum-v1", obs_norm=True)
    rows = _rows(policy, 4, scale=0.5, seed=6)
    kw = dict(backend="torch", seed=3, env_kwargs={"dtype": torch.float64})
    eager = PopulationRollout("Pendulum-v1", _policy("Pendulum-v1", obs_norm=True), 4, **kw)
    fused = PopulationRollout("Pendulum-v1", policy, 4, compile=True, **kw)
    torch.testing.assert_close(fused(rows), eager(rows), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(policy.obs_norm.mean, eager.policy.obs_norm.mean, rtol=1e-9,
                               atol=1e-12)
