"""MuJoCo Warp envs against Gymnasium's own v5 envs (C MuJoCo, float64).

Without the ``[warp]`` extra only the argument checks and the import error run; the rest
skips. Kernels compile on first use (about 15-60 s per model here, then cached under
``~/.cache/warp``).

Tolerances: MuJoCo Warp computes in float32, so one step from the same state (loaded from
C MuJoCo's float64 state, warm start included) agrees to float32 rounding amplified by the
constraint solver (``ONE_STEP_TOL``). Over long runs the gap grows with the dynamics' own
sensitivity: under full-range random actions C MuJoCo against itself, with ``qpos`` moved
by 1e-6, departs by O(1) within 30-50 steps on HalfCheetah, so the free-running comparison
uses moderate actions (``TRACK``), where the dynamics do not amplify rounding.
"""

from __future__ import annotations

import functools
import importlib.util
import sys

import gymnasium
import numpy as np
import pytest
import torch

from rl.envs.mujoco_warp import WARP_ENVS, make_warp_env

HAS_WARP = all(importlib.util.find_spec(m) for m in ("warp", "mujoco_warp"))
needs_warp = pytest.mark.skipif(not HAS_WARP, reason='needs the [warp] extra (mujoco-warp)')

ENV_IDS = ["HalfCheetah-v5", "Swimmer-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5"]
# one step from the same state: (rtol, atol) on observations and rewards, about 2.5 times
# the largest gap measured over 128 states (2.1e-3 HalfCheetah, 3.2e-6 Swimmer, 4.6e-6
# Hopper, 1.1e-4 Walker2d, 2.6e-2 on Humanoid's observations, which reach 2,400)
ONE_STEP_TOL = {
    "HalfCheetah-v5": (1e-4, 5e-3),
    "Swimmer-v5": (1e-5, 1e-5),
    "Hopper-v5": (1e-5, 1e-5),
    "Walker2d-v5": (1e-4, 3e-4),
    "Ant-v5": (1e-4, 1e-3),
    "Humanoid-v5": (1e-2, 5e-2),
}
ANT_GAP = (
    "MuJoCo Warp 4.0 departs from C MuJoCo on Ant's ground contacts: up to 1.3 in qvel over "
    "one env step in half of the sampled states, not float32 (C MuJoCo from the float32-"
    "rounded state agrees to 1e-5), nor the solver tolerance, margin or RK4 alone"
)
ANT_XFAIL = [
    pytest.param(e, marks=pytest.mark.xfail(strict=True, reason=ANT_GAP)) if e == "Ant-v5" else e
    for e in ENV_IDS
]
# free-running: (action amplitude as a fraction of the range, steps, rtol, atol); measured
# largest gaps over 150 steps: 1.0e-4 HalfCheetah, 1.1e-4 Swimmer, 8e-6 Hopper, 2e-4 Walker2d;
# Humanoid 7e-5 on qpos, qvel, cinert, cvel and qfrc_actuator until a foot strikes the
# ground, then up to 4.9e-2 (qvel) and 1.8e-3 (reward) for the rest of that episode
TRACK = {env_id: (0.3, 100, 1e-3, 1e-3) for env_id in ENV_IDS}
TRACK["Humanoid-v5"] = (0.3, 100, 2e-2, 1e-1)
# Humanoid's contact forces (the last 78 observations): Newton stands in for PGS, and how the
# ground's push splits between bodies is not unique, so the two solvers may split it
# differently at an impact (41% on one body once in 100 steps) with the same motion; the
# rules test checks where cfrc_ext goes in the observation and the contact cost.
TRACK_OBS = {"Humanoid-v5": slice(0, 348 - 78)}
# episodes that end within the tracked steps (so that terminations are compared)
TRACK_ENDS = {"Hopper-v5": 4, "Walker2d-v5": 4, "Humanoid-v5": 4}
TRACK_ENDS = {env_id: TRACK_ENDS.get(env_id, 0) for env_id in ENV_IDS}


# ----------------------------------------------------------------------------- helpers
def _c_state(genv) -> dict[str, np.ndarray]:
    """The state a Warp env needs to take one step from where Gymnasium's env is."""
    data = genv.data
    state = {"qpos": data.qpos, "qvel": data.qvel, "qacc_warmstart": data.qacc_warmstart}
    if genv.spec.id == "Ant-v5":
        state["main_body_xy"] = data.body(1).xpos[:2]
    if genv.spec.id == "Humanoid-v5":
        from gymnasium.envs.mujoco.humanoid_v5 import mass_center

        state["mass_center"] = mass_center(genv.model, data)
    return {k: np.array(v, dtype=np.float64) for k, v in state.items()}


def _gym_transitions(env_id: str, num: int, seed: int = 0):
    """``num`` transitions of Gymnasium's env under uniform random actions over 1.2 times
    the action range (MuJoCo clamps the control; the cost uses the action), restarting
    after each termination: states before, actions, observations, rewards, terminated."""
    genv = gymnasium.make(env_id)
    high = genv.action_space.high
    rng = np.random.default_rng(seed)
    genv.reset(seed=seed)
    rows = []
    for k in range(num):
        before = _c_state(genv.unwrapped)
        action = (rng.uniform(-1.2, 1.2, high.shape) * high).astype(np.float32)
        obs, reward, terminated, truncated, _ = genv.step(action)
        rows.append((before, action, obs, reward, terminated))
        if terminated or truncated:
            genv.reset(seed=seed + k + 1)
    states = {key: np.stack([r[0][key] for r in rows]) for key in rows[0][0]}
    return states, *(np.stack([r[i] for r in rows]) for i in range(1, 5))


def _tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, dtype=torch.float32) for k, v in arrays.items()}


def _assert_close(actual: torch.Tensor, expected, rtol: float, atol: float) -> None:
    expected = torch.as_tensor(np.asarray(expected), dtype=torch.float64)
    torch.testing.assert_close(actual.double(), expected, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "env_id, kwargs, match",
    [
        ("Pendulum-v1", {}, r"Invalid env_id: 'Pendulum-v1' \(expected one of \['Ant-v5'"),
        ("HalfCheetah-v5", {"foo": 1}, r"Invalid option\(s\) for HalfCheetah-v5: \['foo'\]"),
        ("Hopper-v5", {"main_body": 1}, r"Invalid option\(s\) for Hopper-v5: \['main_body'\]"),
        ("HalfCheetah-v5", {"reset_noise_scale": -0.1}, r"Invalid reset_noise_scale: -0.1"),
        ("Swimmer-v5", {"ctrl_cost_weight": float("nan")}, r"Invalid ctrl_cost_weight: nan"),
        ("Hopper-v5", {"healthy_z_range": (1.0, 0.5)}, r"Invalid healthy_z_range: \(1.0, 0.5\)"),
        ("Walker2d-v5", {"healthy_angle_range": 1.0}, r"Invalid healthy_angle_range: 1.0"),
        ("Ant-v5", {"terminate_when_unhealthy": 1}, r"Invalid terminate_when_unhealthy: 1"),
        ("Humanoid-v5", {"include_cvel_in_observation": "no"}, r"Invalid include_cvel_in_ob"),
        ("HalfCheetah-v5", {"compile": True}, r"Invalid compile: True \(expected False or"),
        ("HalfCheetah-v5", {"capture": 1}, r"Invalid capture: 1 \(expected True or False\)"),
    ],
)
def test_bad_arguments_raise(env_id, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_warp_env(env_id, 2, **kwargs)


def test_without_the_extra_the_error_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "mujoco_warp", None)  # `import mujoco_warp` fails
    with pytest.raises(ImportError, match=r'install them with `pip install -e "\.\[warp\]"`'):
        make_warp_env("HalfCheetah-v5", 2)


def test_registry_lists_the_six_tasks():
    assert sorted(WARP_ENVS) == sorted(ENV_IDS)


# ----------------------------------------------------------------------------- Gymnasium
@needs_warp
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_spaces_and_reset_observation_equal_gymnasium(env_id):
    env = make_warp_env(env_id, 3, seed=0)
    genv = gymnasium.make(env_id).unwrapped
    assert env.single_action_space == genv.action_space
    assert env.single_observation_space.shape == genv.observation_space.shape
    assert env.max_episode_steps == gymnasium.spec(env_id).max_episode_steps == 1000
    assert env.dt == genv.dt
    obs, _ = env.reset()
    state = env.get_state()
    genv.reset(seed=0)
    for i in range(3):
        genv.set_state(state["qpos"][i].double().numpy(), state["qvel"][i].double().numpy())
        _assert_close(obs[i], genv._get_obs(), rtol=1e-5, atol=1e-5)


@functools.lru_cache(maxsize=1)
def _replay(env_id: str):
    """128 transitions of Gymnasium's env (resets included) replayed as 128 worlds of one
    Warp step: Gymnasium's transitions, the Warp env's outputs and its state after."""
    states, actions, obs, rewards, terminated = _gym_transitions(env_id, 128)
    env = make_warp_env(env_id, 128, seed=0, autoreset_mode="disabled")
    env.reset()
    env.set_state(_tensors(states))
    w_obs, w_rewards, w_terminated, _, _ = env.step(torch.as_tensor(actions))
    gym_out = (states, actions, obs, rewards, terminated)
    return env, gym_out, (w_obs, w_rewards, w_terminated), env.get_state()


@needs_warp
@pytest.mark.parametrize("env_id", ANT_XFAIL)
def test_one_step_from_gymnasium_states_matches(env_id):
    """Physics and rules: one Warp step from each of Gymnasium's 128 states gives its
    observation and reward within ONE_STEP_TOL, and the same termination."""
    _, (_, _, obs, rewards, terminated), (w_obs, w_rewards, w_terminated), _ = _replay(env_id)
    rtol, atol = ONE_STEP_TOL[env_id]
    _assert_close(w_obs, obs, rtol, atol)
    _assert_close(w_rewards, rewards, rtol, atol)
    assert w_terminated.tolist() == terminated.tolist()


X_KEY = {"Ant-v5": "main_body_xy", "Humanoid-v5": "mass_center"}


def _x(env_id: str, state: dict, i: int) -> float:
    """Env i's x position (root, torso or centre of mass) in float32, as the Warp env has it."""
    return float(np.float32(float(state[X_KEY.get(env_id, "qpos")][i][0])))


@needs_warp
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_rules_equal_gymnasium_on_the_warp_state(env_id):
    """Rules alone: Gymnasium's own ``_get_obs``, ``_get_rew`` and ``is_healthy``, run on
    the Warp env's state after its step (float32 values in float64 arithmetic), give the
    Warp env's observations, rewards and terminations."""
    env, (states, actions, *_), (w_obs, w_rewards, w_terminated), after = _replay(env_id)
    genv = gymnasium.make(env_id).unwrapped
    genv.reset(seed=0)
    data = genv.data
    for i in range(len(actions)):
        data.qpos[:] = after["qpos"][i].double().numpy()
        data.qvel[:] = after["qvel"][i].double().numpy()
        data.ctrl[:] = actions[i]
        for key in ("cfrc_ext", "cinert", "cvel", "qfrc_actuator"):
            if key in after:
                getattr(data, key)[:] = after[key][i].double().numpy()
        x_velocity = (_x(env_id, after, i) - _x(env_id, states, i)) / genv.dt
        reward, _ = genv._get_rew(x_velocity, actions[i])
        _assert_close(w_obs[i], genv._get_obs(), rtol=1e-6, atol=1e-6)
        _assert_close(w_rewards[i], reward, rtol=1e-5, atol=1e-5)
        healthy = getattr(genv, "is_healthy", True)
        assert bool(w_terminated[i]) == (not healthy), i


def _set_gym_state(genvs, state, rows) -> None:
    """Reset Gymnasium's envs ``rows`` (``mj_resetData``: zero controls and forces) into
    the Warp env's states."""
    for i in rows:
        genvs[i].reset(seed=i)
        genvs[i].set_state(state["qpos"][i].double().numpy(), state["qvel"][i].double().numpy())


@needs_warp
@pytest.mark.parametrize("env_id", ANT_XFAIL)
def test_trajectory_tracks_gymnasium(env_id):
    """From the same states and actions, 4 Warp worlds track 4 Gymnasium envs for TRACK's
    number of steps: observations (the ended episode's last one where an env ends) and
    rewards within its tolerance, terminations on the same step. When an episode ends, the
    Gymnasium env restarts from the Warp env's same-step reset state, whose observation
    must be Gymnasium's for that state."""
    amplitude, num_steps, rtol, atol = TRACK[env_id]
    env = make_warp_env(env_id, 4, seed=1)
    env.reset()
    genvs = [gymnasium.make(env_id).unwrapped for _ in range(4)]
    _set_gym_state(genvs, env.get_state(), range(4))
    high = env.single_action_space.high
    rng = np.random.default_rng(0)
    num_ended = 0
    for _ in range(num_steps):
        actions = (rng.uniform(-amplitude, amplitude, (4, *high.shape)) * high).astype(np.float32)
        obs, rewards, terminated, _, info = env.step(torch.as_tensor(actions))
        steps = [genv.step(a) for genv, a in zip(genvs, actions)]
        columns = TRACK_OBS.get(env_id, slice(None))
        g_obs = np.stack([s[0] for s in steps])
        _assert_close(info["final_obs"][:, columns], g_obs[:, columns], rtol, atol)
        _assert_close(rewards, [s[1] for s in steps], rtol, atol)
        assert terminated.tolist() == [s[2] for s in steps]
        ended = terminated.nonzero().flatten().tolist()
        _set_gym_state(genvs, env.get_state(), ended)
        for i in ended:  # the new episode's first observation
            _assert_close(obs[i], genvs[i]._get_obs(), rtol=1e-5, atol=1e-5)
        num_ended += len(ended)
    assert num_ended >= TRACK_ENDS[env_id]


# ----------------------------------------------------------------------------- rules
HEALTH_CASES = {
    # (qpos changes, healthy per Gymnasium): thresholds +- 1e-3 and exact float32 bounds
    "Hopper-v5": [
        ({1: 0.701}, True), ({1: 0.699}, False), ({2: 0.199}, True), ({2: 0.201}, False),
        ({2: -0.201}, False), ({3: 99.0}, True), ({3: 100.0}, False), ({4: -100.5}, False),
    ],
    "Walker2d-v5": [
        ({1: 0.801}, True), ({1: 0.799}, False), ({1: 2.0}, False), ({1: 1.999}, True),
        ({2: 1.0}, False), ({2: -0.999}, True), ({2: -1.0}, False),
    ],
    "Ant-v5": [
        ({2: 1.0}, True), ({2: 1.001}, False), ({2: 0.201}, True), ({2: 0.199}, False),
        ({3: float("nan")}, False), ({7: float("inf")}, False),
    ],
    "Humanoid-v5": [({2: 1.0}, False), ({2: 1.001}, True), ({2: 2.0}, False), ({2: 1.999}, True)],
}


@needs_warp
@pytest.mark.parametrize("env_id", sorted(HEALTH_CASES))
def test_termination_rules_equal_gymnasium(env_id):
    """Each case's state, judged by Gymnasium's ``is_healthy`` and by the Warp env's
    reward hook: the same verdict, ``terminated`` its negation, the healthy reward paid
    only when healthy."""
    cases = HEALTH_CASES[env_id]
    env = make_warp_env(env_id, len(cases), seed=0)
    env.reset()
    physics = env.get_state()
    genv = gymnasium.make(env_id).unwrapped
    genv.reset(seed=0)
    qpos0 = genv.init_qpos.copy()
    for i, (changes, healthy) in enumerate(cases):
        qpos = qpos0.copy()
        for index, value in changes.items():
            qpos[index] = value
        genv.set_state(qpos, genv.init_qvel)
        assert bool(genv.is_healthy) == healthy, (i, changes)
        physics["qpos"][i] = torch.as_tensor(qpos, dtype=torch.float32)
        physics["qvel"][i] = 0.0
    actions = torch.zeros(len(cases), *env.single_action_space.shape)
    rewards, terminated = env._reward(physics, physics, actions)
    expected = torch.tensor([healthy for _, healthy in cases])
    assert terminated.tolist() == (~expected).tolist()
    healthy_reward = env.options["healthy_reward"]
    finite = torch.isfinite(rewards)
    assert torch.equal(rewards[finite], (expected.float() * healthy_reward)[finite])


@needs_warp
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_reset_noise_follows_gymnasium(env_id):
    """qpos - qpos0 uniform in [-s, s]; qvel s N(0, 1) (HalfCheetah, Ant) or uniform in
    [-s, s]: the Warp env's 2,000 resets and Gymnasium's 2,000 have the same support and
    standard deviations within 10%."""
    num = 2000
    genv = gymnasium.make(env_id).unwrapped
    g_qpos, g_qvel = [], []
    for seed in range(num):
        genv.reset(seed=seed)
        g_qpos.append(genv.data.qpos - genv.init_qpos)
        g_qvel.append(genv.data.qvel.copy())
    env = make_warp_env(env_id, num, seed=0)
    env.reset()
    state = env.get_state()
    w_qpos = (state["qpos"] - torch.as_tensor(genv.init_qpos, dtype=torch.float32)).double()
    w_qvel = state["qvel"].double()
    s = env.options["reset_noise_scale"]
    for w, g in ((w_qpos, np.array(g_qpos)), (w_qvel, np.array(g_qvel))):
        g = torch.as_tensor(g)
        assert (w.abs().max() <= s * (1 + 1e-6)) == (g.abs().max() <= s)
        torch.testing.assert_close(w.std(0), g.std(0), rtol=0.1, atol=0.0)
        assert w.mean(0).abs().max() < 4 * s / num**0.5
    assert torch.equal(env.get_state()["qacc_warmstart"], torch.zeros_like(w_qvel).float())


# ----------------------------------------------------------------------------- state
@needs_warp
def test_resume_from_get_state_is_exact_across_autoresets():
    """Hopper with a 12-step time limit (so same-step autoresets fall inside the window): a
    state saved after 8 steps and set back replays the next 10 steps bit for bit; the
    envs reset by the time limit start from a fresh reset state with a zero warm start."""
    env = make_warp_env("Hopper-v5", 4, seed=3, max_episode_steps=12)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    actions = [torch.rand(4, 3, generator=gen) * 2 - 1 for _ in range(18)]
    for a in actions[:8]:
        env.step(a)
    saved = env.get_state()

    def run():
        out = [env.step(a) for a in actions[8:]]
        return out, env.get_state()

    first, end_first = run()
    env.set_state(saved)
    second, end_second = run()
    for (o1, r1, te1, tr1, i1), (o2, r2, te2, tr2, i2) in zip(first, second):
        assert torch.equal(o1, o2) and torch.equal(r1, r2) and torch.equal(te1, te2)
        assert torch.equal(tr1, tr2) and torch.equal(i1["final_obs"], i2["final_obs"])
    for key in end_first:
        assert torch.equal(end_first[key], end_second[key]), key
    obs, _, _, truncated, info = first[3]  # the 12th step
    assert truncated.all() and info["_final_obs"].all()
    assert not torch.equal(info["final_obs"], obs)
    # a reset observation: z = 1.25 and the other positions 0, within the noise 5e-3
    expected = torch.tensor([1.25, 0.0, 0.0, 0.0, 0.0])
    assert (obs[:, :5] - expected).abs().max() <= 5e-3 + 1e-6
    env.set_state(saved)
    for a in actions[8:12]:
        env.step(a)
    state = env.get_state()
    assert torch.equal(state["qacc_warmstart"], torch.zeros(4, 6))
    assert torch.equal(state["elapsed_steps"], torch.zeros(4, dtype=torch.int64))


@needs_warp
@pytest.mark.parametrize("env_id", ["Hopper-v5", "Humanoid-v5"])
def test_replayed_launches_equal_plain_launches(env_id):
    """``capture=True`` (a step's launches recorded on its second call and replayed from
    then on; Humanoid's reset forward pass too) steps bit for bit as ``capture=False`` over
    12 steps with same-step autoresets every 5 steps."""
    runs = []
    for capture in (True, False):
        env = make_warp_env(env_id, 4, seed=0, max_episode_steps=5, capture=capture)
        env.reset()
        gen = torch.Generator().manual_seed(0)
        shape = (4, *env.single_action_space.shape)
        outputs = []
        for _ in range(12):
            obs, reward, terminated, truncated, info = env.step(
                torch.rand(shape, generator=gen) * 0.8 - 0.4
            )
            outputs += [obs, reward, terminated, truncated, info["final_obs"]]
        runs.append((outputs, env.get_state(), env._sim._graphs))
    (replayed, end_replayed, graphs), (plain, end_plain, no_graphs) = runs
    assert len(graphs) == (2 if env_id == "Humanoid-v5" else 1)  # the step (and forward)
    assert all(graph is not None for graph in graphs.values())
    assert all(graph is None for graph in no_graphs.values())
    for a, b in zip(replayed, plain):
        assert torch.equal(a, b)
    for key in end_plain:
        assert torch.equal(end_replayed[key], end_plain[key]), key


@needs_warp
def test_only_swimmer_skips_collision_detection():
    """Swimmer's geoms cannot touch (contype = conaffinity = 0): its worlds get no contact
    buffer, so MuJoCo Warp skips collision detection; every other task keeps it (the
    Gymnasium comparisons above check the physics of both)."""
    from rl.envs._mujoco_sim import _can_collide

    for env_id in WARP_ENVS:
        env = make_warp_env(env_id, 2, seed=0)
        assert _can_collide(env.mj_model) == (env_id != "Swimmer-v5"), env_id
        assert (env._sim.data.naconmax == 0) == (env_id == "Swimmer-v5"), env_id


@needs_warp
def test_registry_make_builds_a_warp_env_in_float64():
    """``rl.envs.make`` routes the MuJoCo ids here; ``dtype=torch.float64`` widens the
    float32 physics: observations, rewards and the observation space in float64."""
    import rl.envs

    env = rl.envs.make("HalfCheetah-v5", 2, seed=0, dtype=torch.float64, max_episode_steps=5)
    obs, _ = env.reset()
    assert obs.dtype == torch.float64 and env.single_observation_space.dtype == np.float64
    assert torch.equal(obs, obs.float().double())
    _, reward, _, truncated, _ = env.step(torch.zeros(2, 6, dtype=torch.float64))
    assert reward.dtype == torch.float64 and env.max_episode_steps == 5
    assert not truncated.any()


@needs_warp
def test_disabled_autoreset_resets_only_the_masked_envs():
    """``autoreset_mode="disabled"``: ended envs stay frozen until ``reset(options=
    {"reset_mask": ...})``, which redraws them alone (a fresh reset state, zero warm start)
    and leaves the others' state as it was."""
    env = make_warp_env("Hopper-v5", 4, seed=0, autoreset_mode="disabled")
    env.reset()
    actions = torch.ones(4, 3)  # full thrust: a Hopper falls within about 20 steps
    for _ in range(40):
        _, _, terminated, _, _ = env.step(actions)
        if terminated.any() and not terminated.all():
            break
    assert terminated.any() and not terminated.all()
    before = env.get_state()
    obs, reward, terminated_again, _, _ = env.step(actions)  # ended envs are frozen
    frozen = env.get_state()
    assert torch.equal(frozen["qpos"][terminated], before["qpos"][terminated])
    assert not reward[terminated].any()
    obs, _ = env.reset(options={"reset_mask": terminated})
    after = env.get_state()
    assert torch.equal(after["qpos"][~terminated], frozen["qpos"][~terminated])
    num_ended = int(terminated.sum())
    assert torch.equal(after["qacc_warmstart"][terminated], torch.zeros(num_ended, 6))
    expected = torch.tensor([0.0, 1.25, 0.0, 0.0, 0.0, 0.0])
    assert (after["qpos"][terminated] - expected).abs().max() <= 5e-3 + 1e-6
    assert not after["terminated"][terminated].any()
    assert torch.equal(after["terminated"][~terminated], terminated_again[~terminated])
