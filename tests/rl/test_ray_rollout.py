"""RayPopulationRollout: the same numbers as the in-process PopulationRollout, generation
by generation, for any number of actors; observation statistics merged from the chunks."""

import threading
import time

import pytest
import torch

import evoopt
from rl.normalization import RunningNorm
from rl.policies import LinearPolicy
from rl.rollout import PopulationRollout

ray = pytest.importorskip("ray")
from rl.ray_rollout import RayPopulationRollout

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def make(env_id, obs_dim, space, obs_norm, seed=0):
    torch.manual_seed(seed)
    policy = LinearPolicy(obs_dim, space, obs_norm=RunningNorm(obs_dim) if obs_norm else None)
    with torch.no_grad():  # a non-zero start so that members differ from the first step
        for p in policy.parameters():
            p.copy_(0.1 * torch.randn(p.shape))
    opt = evoopt.PGPE(policy.parameters(), popsize=8, lr=0.1, sigma=0.3, seed=seed)
    return policy, opt


def run(rollout_cls, env_id, space_of, generations, obs_norm, rollout_kwargs, ray_kwargs=None):
    import gymnasium as gym

    env = env_id() if callable(env_id) else gym.make(env_id)
    obs_dim, space = env.observation_space.shape[0], env.action_space
    env.close()
    policy, opt = make(env_id, obs_dim, space, obs_norm)
    kw = dict(rollout_kwargs, **(ray_kwargs or {}))
    rollout = rollout_cls(env_id, policy, opt.popsize, seed=5, **kw)
    out = []
    try:
        for _ in range(generations):
            opt.step(rollout)
            norm = policy.obs_norm
            out.append(
                {
                    "losses": opt.last.losses.clone(),
                    "mean": opt.mean.clone(),
                    "lengths": rollout.last.lengths.clone(),
                    "steps": rollout.total_steps,
                    "norm": None
                    if norm is None
                    else {k: v.clone() for k, v in norm.stats().items()},
                }
            )
        state = (opt.state_dict(), rollout.state_dict(), policy.state_dict())
    finally:
        rollout.close()
    return out, state


def test_cartpole_equals_in_process_and_merges_obs_stats():
    """Chunks of 3, 3, 2 members on 2 actors: losses, optimizer state and lengths equal
    the in-process run exactly; the merged normaliser agrees to rounding."""
    args = ("CartPole-v1", None, 3, True, {"max_episode_steps": 200})
    ref, _ = run(PopulationRollout, *args)
    got, _ = run(
        RayPopulationRollout,
        *args,
        ray_kwargs={"num_actors": 2, "chunk_size": 3, "num_cpus_per_actor": 0.5},
    )
    for r, g in zip(ref, got):
        assert torch.equal(r["losses"], g["losses"])
        assert torch.equal(r["mean"], g["mean"])
        assert torch.equal(r["lengths"], g["lengths"])
        assert r["steps"] == g["steps"]
        assert torch.equal(r["norm"]["count"], g["norm"]["count"])
        torch.testing.assert_close(r["norm"]["mean"], g["norm"]["mean"], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(r["norm"]["m2"], g["norm"]["m2"], rtol=1e-12, atol=1e-12)
    assert len({float(x) for x in ref[-1]["losses"]}) > 2  # members really differ


def test_one_chunk_is_bitwise_in_process_and_resumes_in_process():
    """chunk_size >= popsize: one chunk, so even the normaliser is bitwise the in-process
    one; the Ray rollout's state_dict resumes an in-process rollout exactly."""
    args = ("CartPole-v1", None, 3, True, {"max_episode_steps": 100})
    ref, ref_state = run(PopulationRollout, *args)
    got, got_state = run(
        RayPopulationRollout,
        *args,
        ray_kwargs={"num_actors": 1, "chunk_size": 8, "num_cpus_per_actor": 0.5},
    )
    for r, g in zip(ref, got):
        assert torch.equal(r["losses"], g["losses"]) and torch.equal(r["mean"], g["mean"])
        for k in ("count", "mean", "m2"):
            assert torch.equal(r["norm"][k], g["norm"][k])
    assert (
        got_state[1]["generation"] == 3
        and got_state[1]["total_steps"] == ref_state[1]["total_steps"]
    )
    # resume the Ray run's state in process: generation 4 equals the in-process run's
    import gymnasium as gym

    obs_dim, space = 4, gym.make("CartPole-v1").action_space
    cont = []
    for opt_sd, roll_sd, pol_sd in (ref_state, got_state):
        policy, opt = make("CartPole-v1", obs_dim, space, True)
        policy.load_state_dict(pol_sd)
        opt.load_state_dict(opt_sd)
        rollout = PopulationRollout("CartPole-v1", policy, 8, seed=5, max_episode_steps=100)
        rollout.load_state_dict(roll_sd)
        opt.step(rollout)
        cont.append((opt.last.losses, opt.mean))
    assert torch.equal(cont[0][0], cont[1][0]) and torch.equal(cont[0][1], cont[1][1])


def test_box_actions_with_action_noise_equal_in_process():
    """Pendulum, action noise: each slot's noise is its row of the in-process draw."""
    args = ("Pendulum-v1", None, 2, False, {"max_episode_steps": 40, "action_noise": 0.3})
    ref, _ = run(PopulationRollout, *args)
    got, _ = run(
        RayPopulationRollout,
        *args,
        ray_kwargs={"num_actors": 2, "chunk_size": 3, "num_cpus_per_actor": 0.5},
    )
    for r, g in zip(ref, got):
        assert torch.equal(r["losses"], g["losses"]) and torch.equal(r["mean"], g["mean"])
    # and the noise matters: without it the losses differ
    quiet, _ = run(PopulationRollout, "Pendulum-v1", None, 1, False, {"max_episode_steps": 40})
    assert not torch.equal(quiet[0]["losses"], ref[0]["losses"])


class _Slow(__import__("gymnasium").Wrapper):
    def reset(self, **kwargs):
        time.sleep(0.15)  # a chunk of 4 members takes >= 0.6 s: the kill lands inside it
        return self.env.reset(**kwargs)


def slow_cartpole():
    import gymnasium as gym

    return _Slow(gym.make("CartPole-v1", max_episode_steps=60))


def test_actor_killed_mid_generation_gives_the_same_generation():
    """ray.kill on an actor while it plays its chunk: replaced, chunk re-played with the
    same seeds, and the run equals the in-process one (returns, normaliser, optimizer)."""
    args = (slow_cartpole, None, 2, True, {})
    ref, _ = run(PopulationRollout, *args)
    import gymnasium as gym

    policy, opt = make("CartPole-v1", 4, gym.spaces.Discrete(2), True)
    with RayPopulationRollout(
        slow_cartpole, policy, 8, seed=5, num_actors=2, num_cpus_per_actor=0.5
    ) as rollout:
        ray.get([a.ready.remote() for a in rollout.evaluator.actors])
        victim = rollout.evaluator.actors[1]
        threading.Timer(0.3, ray.kill, args=(victim,)).start()
        got = []
        for _ in range(2):
            opt.step(rollout)
            got.append((opt.last.losses.clone(), opt.mean.clone(), policy.obs_norm.stats()))
        events = [(e["generation"], e["kind"], e["members"]) for e in rollout.evaluator.events]
        assert events in ([(0, "died", [0, 1, 2, 3])], [(0, "died", [4, 5, 6, 7])])  # its chunk
    for r, (losses, mean, norm) in zip(ref, got):
        assert torch.equal(r["losses"], losses) and torch.equal(r["mean"], mean)
        torch.testing.assert_close(r["norm"]["mean"], norm["mean"], rtol=1e-12, atol=1e-14)


def test_bad_arguments():
    policy = LinearPolicy(4, __import__("gymnasium").spaces.Discrete(2))
    with pytest.raises(ValueError, match="Invalid chunk_size: 0"):
        RayPopulationRollout("CartPole-v1", policy, 4, chunk_size=0)
    with pytest.raises(ValueError, match="Invalid timeout: 0"):
        RayPopulationRollout("CartPole-v1", policy, 4, timeout=0)


def test_train_with_ray_actors_equals_the_in_process_run(tmp_path):
    from rl.train import train

    common = dict(optimizer="pgpe", policy="linear", popsize=8, iterations=3, seed=5, eval_every=3,
                  eval_episodes=2, progress=False, plot=False)
    local = train("CartPole-v1", **common)
    remote = train("CartPole-v1", rollout_kwargs={"num_actors": 2}, **common)
    assert [r["train_return"] for r in remote.history] == [r["train_return"] for r in local.history]
    assert remote.final_eval == local.final_eval
    with pytest.raises(ValueError, match="Invalid num_actors for 'ppo'"):
        train("CartPole-v1", optimizer="ppo", iterations=1, rollout_kwargs={"num_actors": 2},
              progress=False)


def test_torch_backend_on_actors_equals_in_process():
    """backend="torch": each actor plays its chunk's slots from the initial states of the
    whole in-process batch, so losses, lengths and the optimizer equal the in-process run
    exactly; the merged normaliser (one-pass sums per chunk) agrees to rounding."""
    args = ("CartPole-v1", None, 3, True, {"max_episode_steps": 200, "backend": "torch"})
    ref, _ = run(PopulationRollout, *args)
    got, _ = run(
        RayPopulationRollout,
        *args,
        ray_kwargs={"num_actors": 2, "chunk_size": 3, "num_cpus_per_actor": 0.5},
    )
    for r, g in zip(ref, got):
        assert torch.equal(r["losses"], g["losses"])
        assert torch.equal(r["mean"], g["mean"])
        assert torch.equal(r["lengths"], g["lengths"])
        assert torch.equal(r["norm"]["count"], g["norm"]["count"])
        torch.testing.assert_close(r["norm"]["mean"], g["norm"]["mean"], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(r["norm"]["m2"], g["norm"]["m2"], rtol=1e-9, atol=1e-10)
    assert len({float(x) for x in ref[-1]["losses"]}) > 2  # members really differ
