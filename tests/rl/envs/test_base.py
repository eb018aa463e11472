"""TorchVectorEnv's conventions: make and its errors, argument checks, spaces, autoreset
(same step and disabled), time limits, seeding, and exact resume through get/set_state."""

import os
import re
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import rl.envs

from ._twins import CLASSIC_IDS, DEVICES, policy


def test_registered_lists_classic_and_mujoco_ids():
    ids = rl.envs.registered()
    assert ids[:5] == CLASSIC_IDS and "HalfCheetah-v5" in ids and len(ids) == 11


@pytest.mark.parametrize("env_id", CLASSIC_IDS)
def test_spaces_and_time_limits_are_gymnasium_s(env_id):
    env, theirs = rl.envs.make(env_id, 3), gym.make(env_id)
    assert env.single_observation_space == theirs.observation_space
    assert env.single_action_space == theirs.action_space
    assert env.max_episode_steps == theirs.spec.max_episode_steps
    assert env.observation_space.shape == (3, *theirs.observation_space.shape)
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    env64 = rl.envs.make(env_id, 3, dtype=torch.float64, autoreset_mode="disabled")
    assert env64.single_observation_space.dtype == np.float64
    assert (env64.single_observation_space.high == theirs.observation_space.high).all()
    assert env64.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    obs, _ = env64.reset(seed=0)
    assert obs.dtype == torch.float64 and env64.observation_space.contains(obs.numpy())


MAKE_ERRORS = [
    ({"env_id": "LunarLander-v3"}, r"'LunarLander-v3' has no device implementation.*"
     r"CartPole-v1.*gymnasium backend"),
    ({"num_envs": 0}, r"Invalid num_envs: 0 \(expected an integer >= 1\)"),
    ({"dtype": torch.float16}, r"Invalid dtype: torch.float16 \(expected torch.float32"),
    ({"autoreset_mode": "next_step"}, r"Invalid autoreset_mode: 'next_step' \(expected one of"),
    ({"max_episode_steps": 0}, r"Invalid max_episode_steps: 0"),
    ({"seed": -1}, r"Invalid seed: -1"),
    ({"seed": 1.5}, r"Invalid seed: 1.5"),
    ({"compile": "yes"}, r"Invalid compile: 'yes' \(expected True, False or 'auto'\)"),
    ({"device": "nonsense"}, r"Invalid device: 'nonsense'"),
]


@pytest.mark.parametrize("kwargs, match", MAKE_ERRORS)
def test_make_rejects_bad_arguments(kwargs, match):
    args = {"env_id": "CartPole-v1", "num_envs": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        rl.envs.make(**args)


def test_mujoco_ids_without_warp_name_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "rl.envs.mujoco_warp", None)  # import fails
    with pytest.raises(ImportError, match=r'pip install -e "\.\[warp\]"'):
        rl.envs.make("HalfCheetah-v5", 2)


def _cartpole():
    env = rl.envs.make("CartPole-v1", 4, seed=0)
    env.reset()
    return env


def _pendulum():
    env = rl.envs.make("Pendulum-v1", 4, seed=0)
    env.reset()
    return env


ACTION_ERRORS = [
    (_cartpole, np.zeros(4, np.int64), r"Invalid actions: ndarray \(expected an integer tensor"),
    (_cartpole, torch.zeros(4), r"dtype torch.float32, shape \(4,\) \(expected an integer"),
    (_cartpole, torch.zeros(4, 1, dtype=torch.long), r"shape \(4, 1\) \(expected an integer "
     r"tensor of shape \(4,\) on cpu\)"),
    (_cartpole, torch.tensor([0, 1, 2, 0]), r"Invalid actions: 2 \(expected values in Discrete"),
    (_cartpole, torch.tensor([0, -1, 0, 0]), r"Invalid actions: -1 "),
    (_cartpole, torch.zeros(4, dtype=torch.long, device="meta"), r"on device meta but the env "
     r"is on cpu .*never moved silently"),
    (_pendulum, torch.zeros(4), r"shape \(4,\) \(expected a floating-point tensor of shape "
     r"\(4, 1\)"),
    (_pendulum, torch.zeros(4, 1, dtype=torch.long), r"dtype torch.int64"),
]


@pytest.mark.parametrize("make_env, actions, match", ACTION_ERRORS)
def test_step_rejects_bad_actions_and_keeps_its_state(make_env, actions, match):
    env = make_env()
    before = env.get_state()
    with pytest.raises(ValueError, match=match):
        env.step(actions)
    after = env.get_state()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_step_and_state_before_reset_and_bad_options_are_refused():
    env = rl.envs.make("CartPole-v1", 2)
    for call in (lambda: env.step(torch.zeros(2, dtype=torch.long)), env.get_state):
        with pytest.raises(ValueError, match=r"before reset\(\): call reset\(\) first"):
            call()
    with pytest.raises(ValueError, match="needs a first full reset"):
        env.reset(options={"reset_mask": torch.ones(2, dtype=torch.bool)})
    env.reset()
    with pytest.raises(ValueError, match=r"Invalid options: \{'low': 0\}"):
        env.reset(options={"low": 0})
    with pytest.raises(ValueError, match=r"Invalid reset_mask: dtype torch.int64, shape \(2,\)"):
        env.reset(options={"reset_mask": torch.ones(2, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"Invalid reset_mask: list"):
        env.reset(options={"reset_mask": [True, False]})


def test_set_state_rejects_unknown_keys_and_wrong_tensors():
    env = _cartpole()
    with pytest.raises(ValueError, match=r"Invalid state keys: \['x'\] \(expected some of"):
        env.set_state({"x": torch.zeros(4)})
    with pytest.raises(ValueError, match=r"Invalid state\['state'\].*shape \(4, 4\), dtype "
                       r"torch.float32"):
        env.set_state({"state": torch.zeros(4, 4, dtype=torch.float64)})
    with pytest.raises(ValueError, match=r"Invalid state\['elapsed_steps'\]: list \(expected a "
                       r"tensor of shape \(4,\), dtype torch.int64"):
        env.set_state({"elapsed_steps": [0, 0, 0, 0]})
    with pytest.raises(ValueError, match=r"Invalid state keys: \['x'\]"):  # nothing is written
        env.set_state({"state": torch.ones(4, 4), "x": torch.zeros(4)})
    assert (env.get_state()["state"].abs() <= 0.05).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "env_id, reset_subset", [(i, True) for i in CLASSIC_IDS] + [("CartPole-v1", False)]
)
def test_resume_from_get_state_is_exact(env_id, reset_subset, device):
    """Save after 30 steps, run 120 more (autoresets included), restore, run them again."""
    env = rl.envs.make(env_id, 16, device=device, seed=0, max_episode_steps=50)
    env.reset_subset = reset_subset
    obs, _ = env.reset()

    def run(obs, steps, seed):
        gen = torch.Generator(device=env.device).manual_seed(seed)
        greedy = torch.zeros(16, dtype=torch.bool, device=env.device)
        out = []
        for _ in range(steps):
            obs, *rest, info = env.step(policy(env_id, obs, gen, greedy))
            out.append(torch.cat([obs.flatten(), *(t.double().flatten() for t in rest)]))
        return obs, torch.stack(out)

    obs, _ = run(obs, 30, seed=1)
    saved = env.get_state()
    _, first = run(obs, 120, seed=2)
    env.set_state(saved)
    _, second = run(obs, 120, seed=2)
    assert torch.equal(first, second)


def test_same_step_autoreset_and_time_limit():
    env = rl.envs.make("Pendulum-v1", 6, seed=0, max_episode_steps=3)
    obs, _ = env.reset()
    actions = torch.zeros(6, 1)
    for t in (1, 2):
        obs, _, terminated, truncated, info = env.step(actions)
        assert not (terminated.any() or truncated.any() or info["_final_obs"].any())
        assert (env.get_state()["elapsed_steps"] == t).all()
    last = env.get_state()["state"]
    obs, reward, terminated, truncated, info = env.step(actions)
    assert truncated.all() and not terminated.any() and info["_final_obs"].all()
    # final_obs is the observation of the state reached by the third step...
    expected, *_ = env._dynamics(env._import_state({"state": last}), actions)
    assert torch.equal(info["final_obs"], env._observe(expected))
    # ...and obs the first of the next episode, elapsed steps back to 0
    state = env.get_state()
    assert (state["elapsed_steps"] == 0).all()
    assert torch.equal(obs, env._observe(env._import_state(state)))
    assert (state["state"].abs() <= torch.tensor([torch.pi, 1.0])).all()
    assert not torch.equal(obs, info["final_obs"])


@pytest.mark.parametrize("reset_subset", [True, False])
def test_same_step_terminated_envs_only_are_reset(reset_subset):
    env = rl.envs.make("CartPole-v1", 64, seed=0)
    env.reset_subset = reset_subset
    env.reset()
    actions = torch.ones(64, dtype=torch.long)  # push right until the pole falls
    for _ in range(200):
        obs, reward, terminated, truncated, info = env.step(actions)
        if terminated.any():
            break
    done = info["_final_obs"]
    assert torch.equal(done, terminated) and 0 < done.sum() and (reward == 1).all()
    assert (obs[done].abs() <= 0.05).all() and (env.get_state()["elapsed_steps"][done] == 0).all()
    assert torch.equal(obs[~done], info["final_obs"][~done])
    assert (info["final_obs"][done][:, [0, 2]].abs() > torch.tensor([2.4, 0.2094])).any(1).all()


@pytest.mark.parametrize("reset_subset", [True, False])
def test_disabled_mode_freezes_ended_envs_until_reset_mask(reset_subset):
    env = rl.envs.make("CartPole-v1", 8, seed=0, autoreset_mode="disabled")
    env.reset_subset = reset_subset
    env.reset()
    actions = torch.tensor([1, 0] * 4)
    while True:
        obs, reward, terminated, truncated, info = env.step(actions)
        if terminated.any():
            break
    assert info == {}
    ended, frozen = terminated.clone(), env.get_state()
    obs2, reward2, terminated2, truncated2, _ = env.step(actions)
    assert torch.equal(obs2[ended], obs[ended]) and (reward2[ended] == 0).all()
    assert terminated2[ended].all() and not truncated2[ended].any()
    state2 = env.get_state()
    assert torch.equal(state2["state"][ended], frozen["state"][ended])
    assert torch.equal(state2["elapsed_steps"][ended], frozen["elapsed_steps"][ended])
    assert (state2["elapsed_steps"][~ended] == frozen["elapsed_steps"][~ended] + 1).all()
    obs3, _ = env.reset(options={"reset_mask": ended})
    state3 = env.get_state()
    assert (state3["elapsed_steps"][ended] == 0).all() and not state3["terminated"][ended].any()
    assert torch.equal(state3["state"][~ended], state2["state"][~ended])
    assert (obs3[ended].abs() <= 0.05).all() and torch.equal(obs3[~ended], obs2[~ended])
    # an all-False mask changes no env (Gymnasium raises); the generator still advances
    before = env.get_state()
    env.reset(options={"reset_mask": torch.zeros(8, dtype=torch.bool)})
    after = env.get_state()
    assert all(torch.equal(before[k], after[k]) for k in before if k != "rng_state")


def test_seeding_is_reproducible_and_private():
    def first_obs(seed, reset_seed=None):
        return rl.envs.make("Acrobot-v1", 5, seed=seed).reset(seed=reset_seed)[0]

    torch.manual_seed(0)
    a = first_obs(3)
    torch.manual_seed(1)  # the global RNG plays no part
    assert torch.equal(a, first_obs(3)) and not torch.equal(a, first_obs(4))
    assert torch.equal(a, first_obs(4, reset_seed=3))
    assert not torch.equal(first_obs(None), first_obs(None))


def test_box_actions_are_clipped_where_gymnasium_clips_them():
    env = rl.envs.make("MountainCarContinuous-v0", 2, dtype=torch.float64, seed=0)
    env.reset()
    state = env.get_state()
    _, reward, *_ = env.step(torch.tensor([[5.0], [1.0]], dtype=torch.float64))
    after = env.get_state()["state"]
    env.set_state(state)
    env.step(torch.tensor([[1.0], [1.0]], dtype=torch.float64))
    assert torch.equal(after, env.get_state()["state"])  # the force is clipped to 1...
    assert reward[0].item() == -0.1 * 25.0  # ...the action cost is not
    env = rl.envs.make("Pendulum-v1", 1, dtype=torch.float64, seed=0)
    env.reset()
    state = env.get_state()
    _, r_big, *_ = env.step(torch.tensor([[9.0]], dtype=torch.float64))
    after = env.get_state()["state"]
    env.set_state(state)
    _, r_max, *_ = env.step(torch.tensor([[2.0]], dtype=torch.float64))
    assert torch.equal(after, env.get_state()["state"]) and torch.equal(r_big, r_max)


def test_env_options_reach_the_dynamics():
    env = rl.envs.make("CartPole-v1", 4, seed=0, sutton_barto_reward=True)
    env.reset()
    _, reward, terminated, *_ = env.step(torch.zeros(4, dtype=torch.long))
    assert (reward == 0).all() and not terminated.any()
    low_g = rl.envs.make("Pendulum-v1", 4, seed=0, g=0.0, dtype=torch.float64)
    low_g.reset()
    state = low_g.get_state()["state"]
    low_g.step(torch.zeros(4, 1, dtype=torch.float64))
    assert torch.equal(low_g.get_state()["state"][:, 1], state[:, 1])  # no torque, no gravity


@pytest.mark.slow
def test_compile_matches_eager():
    """One small case: the compiled step equals the eager one to float32 rounding (the
    first call compiles: about a minute on this loaded 2-core machine)."""
    pytest.importorskip("torch._inductor")
    eager = rl.envs.make("CartPole-v1", 32, seed=0)
    fused = rl.envs.make("CartPole-v1", 32, seed=0, compile=True)
    torch.testing.assert_close(eager.reset()[0], fused.reset()[0], rtol=0, atol=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        actions = torch.randint(0, 2, (32,), generator=gen)
        *out_e, _ = eager.step(actions)
        *out_c, _ = fused.step(actions)
        for e, c in zip(out_e, out_c):
            torch.testing.assert_close(e, c, rtol=1e-6, atol=1e-6)


def test_compile_auto_falls_back_to_eager(monkeypatch):
    import rl.envs.base as base

    monkeypatch.setattr(base, "_compiler_available", lambda: False)
    env = rl.envs.make("CartPole-v1", 4, compile="auto")
    assert env._transition_fn == env._transition  # no compiler: eager from the start

    def broken(fn, **kwargs):
        def fails(*args):
            raise RuntimeError("no backend")

        return fails

    monkeypatch.setattr(base, "_compiler_available", lambda: True)
    monkeypatch.setattr(torch, "compile", broken)
    env, eager = (rl.envs.make("CartPole-v1", 4, seed=0, compile=c) for c in ("auto", False))
    env.reset(), eager.reset()
    actions = torch.tensor([0, 1, 1, 0])
    with pytest.warns(UserWarning, match="torch.compile failed, stepping eagerly: no backend"):
        out = env.step(actions)
    assert env._transition_fn == env._transition
    for a, b in zip(out[:4], eager.step(actions)[:4]):
        assert torch.equal(a, b)


def _reference_hash32(x: int) -> int:
    """The ``[16 21f0aaad 15 735a2d97 15]`` mix on Python integers (uint32)."""
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x735A2D97) & 0xFFFFFFFF
    return x ^ (x >> 15)


def test_hash32_is_the_reference_mix_on_int32_bit_patterns():
    from rl.envs._classic import _int32, hash32

    words = [0, 1, 0xFFFF, 0x10000, 2**31 - 1, 2**31, 2**32 - 1, 0x9E3779B9, 123456789]
    x = torch.tensor([_int32(w) for w in words], dtype=torch.int32)
    assert [int(v) & 0xFFFFFFFF for v in hash32(x)] == [_reference_hash32(w) for w in words]
    assert _reference_hash32(1) == 0x86D2FA73  # pinned: a changed mix changes every seed


def _trajectory(env, steps, seed=1):
    obs, _ = env.reset()
    gen = torch.Generator().manual_seed(seed)
    greedy = torch.zeros(env.num_envs, dtype=torch.bool)
    out = []
    for _ in range(steps):
        obs, *rest, info = env.step(policy(env.spec_id, obs, gen, greedy))
        out.append(torch.cat([obs.flatten(), *(t.double().flatten() for t in rest)]))
    return torch.stack(out)


@pytest.mark.parametrize("env_id", CLASSIC_IDS)
def test_reset_draws_are_the_same_drawn_for_ended_envs_or_for_all(env_id):
    """Counter-based draws: drawing for the ended envs only (eager default) or for every
    env and merging (the compiled path, ``reset_subset = False``) gives the same run."""
    runs = []
    for subset in (True, False):
        env = rl.envs.make(env_id, 16, seed=0, max_episode_steps=20)
        env.reset_subset = subset
        runs.append(_trajectory(env, 60))
    assert (env.get_state()["episodes"] >= 3).all()  # every env was reset at least twice
    assert torch.equal(runs[0], runs[1])


def test_an_env_s_initial_states_depend_on_seed_env_and_episode_only():
    """Env 3 reset alone gets the state that a full reset gives it: draws are a function
    of (seed, env, episode), whatever the other envs did."""
    a, b = (rl.envs.make("CartPole-v1", 8, seed=0, autoreset_mode="disabled") for _ in "ab")
    a.reset(), b.reset()
    a.step(torch.ones(8, dtype=torch.long))
    a.reset(options={"reset_mask": torch.arange(8) == 3})
    b.reset()
    assert torch.equal(a.get_state()["state"][3], b.get_state()["state"][3])
    assert torch.equal(a.get_state()["episodes"], torch.tensor([1, 1, 1, 2, 1, 1, 1, 1],
                                                                dtype=torch.int32))
    assert not torch.equal(a.get_state()["state"][2], b.get_state()["state"][2])


def test_set_state_rejects_rng_keys_out_of_range_and_writes_nothing():
    env = _cartpole()
    before = env.get_state()
    with pytest.raises(ValueError, match=r"Invalid state\['rng_key'\]: \[-1, 5\] \(expected "
                       r"two words in \[0, 2\^32\)\)"):
        env.set_state({"rng_key": torch.tensor([-1, 5]), "state": torch.ones(4, 4)})
    after = env.get_state()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("mode", ["same_step", "disabled"])
@pytest.mark.parametrize("env_id", CLASSIC_IDS)
def test_the_step_traces_to_one_graph_without_host_sync(env_id, mode):
    """What ``compile`` fuses: the whole step (dynamics, time limit, autoreset with its
    draws) is one graph, with no graph break and no data-dependent op."""
    env = rl.envs.make(env_id, 8, seed=0, autoreset_mode=mode)
    obs, _ = env.reset()
    actions = policy(env_id, obs, torch.Generator().manual_seed(0), torch.zeros(8, dtype=bool))
    args = (env._state, actions, env._elapsed32, env._episodes, env._keys, env._flags)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(env._transition)(*args)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    code = explained.graphs[0].code
    assert not re.search(r"nonzero|\.item\(|\.tolist\(|index_put|index_fill", code), code
    assert ("xor" in code) == (mode == "same_step")  # the reset draws are in the graph


#: compiling a step costs up to a minute on a cold cache: CartPole (both autoreset modes) in
#: every run, the other envs' fused steps with EVOOPT_FULL=1
_FULL = pytest.mark.skipif(not os.environ.get("EVOOPT_FULL"),
                           reason="compiles a step (up to a minute cold); set EVOOPT_FULL=1")


@pytest.mark.slow
@pytest.mark.parametrize(
    "env_id, mode",
    [("CartPole-v1", "same_step"), ("CartPole-v1", "disabled")]
    + [pytest.param(i, "same_step", marks=_FULL) for i in CLASSIC_IDS if i != "CartPole-v1"],
)
def test_compiled_step_equals_eager_with_autoresets(env_id, mode):
    """The fused step against the eager one over 60 steps with a time limit of 15, so that
    every env is reset several times: the same flags and episode counts exactly, the same
    numbers to float32 rounding (inductor may reorder arithmetic)."""
    pytest.importorskip("torch._inductor")
    envs = [rl.envs.make(env_id, 16, seed=0, max_episode_steps=15, autoreset_mode=mode,
                         compile=c) for c in (False, True)]
    gens = [torch.Generator().manual_seed(1) for _ in envs]
    obs = [env.reset()[0] for env in envs]
    greedy = torch.arange(16) % 2 == 1
    for _ in range(60):
        actions = policy(env_id, obs[0], gens[0], greedy)
        outs = [env.step(actions) for env in envs]
        obs = [out[0] for out in outs]
        for k in (2, 3):
            assert torch.equal(outs[0][k], outs[1][k])
        for e, c in zip(outs[0][:2], outs[1][:2]):
            torch.testing.assert_close(e, c, rtol=1e-5, atol=1e-5)
        if mode == "same_step":
            torch.testing.assert_close(outs[0][4]["final_obs"], outs[1][4]["final_obs"],
                                       rtol=1e-5, atol=1e-5)
    states = [env.get_state() for env in envs]
    assert torch.equal(states[0]["episodes"], states[1]["episodes"])
    assert torch.equal(states[0]["elapsed_steps"], states[1]["elapsed_steps"])
    assert (states[0]["episodes"] >= 4).all() or mode == "disabled"
