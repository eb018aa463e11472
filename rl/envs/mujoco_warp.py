"""Gymnasium's v5 MuJoCo locomotion tasks on MuJoCo Warp, batched on a torch device.

``make_warp_env("HalfCheetah-v5", num_envs=512, device="cuda", seed=0)`` returns a
:class:`~rl.envs.base.TorchVectorEnv` whose ``num_envs`` worlds step together in MuJoCo Warp
(``mujoco-warp``, ``warp-lang``: the ``[warp]`` extra); every tensor in and out lives on
``device`` and the physics state is read and written through Warp's zero-copy torch views.

Each task re-states its Gymnasium v5 env on tensors: the same model file (Gymnasium's own
assets), frame skip, ``dt = timestep * frame_skip``, observation, reward, healthy and
termination rules, reset noise and keyword options (the v5 names and defaults; the
``xml_file``, ``frame_skip``, camera and ``main_body`` options are not offered). With
``x`` the root's forward position, ``a`` the action and ``w_*`` the weights::

    HalfCheetah  r = w_f dx/dt - w_c |a|^2                                    never ends
    Swimmer      r = w_f dx/dt - w_c |a|^2                                    never ends
    Hopper       r = w_f dx/dt + h r_h - w_c |a|^2,  h = healthy(qpos, qvel), ends when not h
    Walker2d     r = w_f dx/dt + h r_h - w_c |a|^2,  h = healthy(z, angle),   ends when not h
    Ant          r = w_f dx/dt + h r_h - w_c |a|^2 - w_k |clip(cfrc_ext)|^2, ends when not h
    Humanoid     r = w_f dx/dt + h r_h - w_c |a|^2 - min(w_k |cfrc_ext|^2, c_max), x the
                 centre of mass,                                                ends when not h

Actions are not clipped by the env (nor by Gymnasium's): MuJoCo clamps the control to the
actuators' ``ctrlrange`` and the control cost uses the action as given. Ant's ``x`` is the
torso's ``xpos`` and Humanoid's the mass-weighted ``xipos``, which MuJoCo computes before
the last integration of a step (as in Gymnasium, which reads them after ``mj_step``); their
previous values and the force observations are carried in the state. The time limit
(1000 steps) and the autoreset are the base class's.

Reset noise (v5): ``qpos = qpos0 + U(-s, s)``; ``qvel = s N(0, 1)`` for HalfCheetah and Ant,
``U(-s, s)`` for the others. The draws come from the env's generator as one row
``[nq uniforms | nv uniforms or normals]`` per env and reset.

Departures from Gymnasium's envs, all measured in ``tests/rl/envs/test_mujoco_warp.py``:

- float32: MuJoCo Warp computes in float32 where C MuJoCo uses float64 (observations and
  rewards come in ``dtype``; float64 only widens them). One step from the same 128 states
  agrees within 2.1e-3 (HalfCheetah), 3e-6 (Swimmer), 5e-6 (Hopper), 1.1e-4 (Walker2d);
  100-step trajectories under moderate actions stay within 2e-4, with the same
  terminations. Under full-range random actions the dynamics amplify any rounding: C
  MuJoCo against itself, ``qpos`` moved by 1e-6, departs by O(1) within 30-50 steps
  (HalfCheetah), so no float32 simulator tracks such runs for long.
- Ant-v5: MuJoCo Warp 4.0 departs from C MuJoCo on the ground contacts (up to 1.3 in qvel
  over one env step in half of the sampled states; C MuJoCo from the same float32-rounded
  states agrees to 1e-5, and neither the solver tolerance, the 0.01 margin nor RK4 alone
  explains it). The rules (observation, reward, health) equal Gymnasium's on the Warp
  state; the physics is MuJoCo Warp's.
- Humanoid-v5: MuJoCo Warp has no PGS solver, so Newton stands in (see
  :class:`HumanoidEnv`); gaps of 7e-5 until a foot strikes the ground, up to 5e-2 (qvel)
  after such an impact; the split of contact forces between bodies may differ.
- ``info`` holds no reward terms (only ``final_obs``/``_final_obs``); the step calls Warp
  kernels, so ``compile=True`` is refused; with ``"disabled"`` autoreset, ended envs keep
  stepping in Warp (their results are discarded by the base class).

Speed: a step replays its recorded Warp launches (a CUDA graph on a GPU, Warp's launch
recording on a CPU; :mod:`rl.envs._mujoco_sim`), bit for bit what launching them from
Python gives (``capture=False``), which costs 7-10 times more at 64 envs on a CPU. On this
2-core CPU, per second of CPU time (``bench/bench_warp.py``, load average 6.5-12),
HalfCheetah steps 5,400 env steps/s at 64 envs and 6,500 at 512 (0.79 and 0.92 of
Gymnasium's C MuJoCo sync vector env), Hopper 2,900 and 3,000 (0.95, 0.91): 0.96-0.98 of
``mujoco_warp.step`` alone, whose kernels (one thread on a CPU) are the cost. Swimmer's
geoms cannot touch, so its worlds skip collision detection. Its speed is on a GPU.

State (``get_state``): ``qpos``, ``qvel``, ``qacc_warmstart`` (the solver's warm start,
which Gymnasium zeroes on reset) and the task's carried quantities, all float32: a state
copied and set back resumes a run exactly.
"""

from __future__ import annotations

import math
import os

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from evoopt.checks import check_positive, check_range

from ._mujoco_sim import STATE, WARP_FIX, WarpSimulator, load_model
from .base import TorchVectorEnv

__all__ = [
    "AntEnv",
    "HalfCheetahEnv",
    "HopperEnv",
    "HumanoidEnv",
    "MujocoWarpEnv",
    "SwimmerEnv",
    "WARP_ENVS",
    "WARP_FIX",
    "Walker2dEnv",
    "make_warp_env",
]

ASSETS = os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets")
_BOOL_OPTIONS = ("terminate_when_unhealthy", "exclude_current_positions_from_observation")


def _check_option(name: str, value, default):
    """Validate one keyword option against the type of its v5 default."""
    if isinstance(default, bool) or name.startswith("include_") or name in _BOOL_OPTIONS:
        if not isinstance(value, bool):
            raise ValueError(f"Invalid {name}: {value!r} (expected True or False)")
        return value
    if isinstance(default, tuple):
        ok = isinstance(value, (tuple, list)) and len(value) == 2
        low, high = value if ok else (None, None)
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if not (ok and not math.isnan(low) and not math.isnan(high) and low <= high):
            raise ValueError(
                f"Invalid {name}: {value!r} (expected a pair (low, high) with low <= high)"
            )
        return (float(low), float(high))
    if name == "reset_noise_scale":
        return check_positive(name, value, allow_zero=True)
    return check_range(name, value, -math.inf, math.inf)


class MujocoWarpEnv(TorchVectorEnv):
    """Base of the v5 locomotion tasks (see the module docstring).

    Args:
        num_envs, device, seed, dtype, autoreset_mode, max_episode_steps, check_actions:
            see :class:`~rl.envs.base.TorchVectorEnv`.
        compile: ``False`` (or ``"auto"``, which steps eagerly): the step runs Warp kernels.
        capture: replay the step's Warp launches from a recording (a CUDA graph on a GPU, Warp's
            launch recording on a CPU; see :mod:`rl.envs._mujoco_sim`), bit for bit the plain
            launches; ``False`` launches each kernel from Python on every step.
        **options: the task's Gymnasium v5 keyword options (``ctrl_cost_weight``,
            ``reset_noise_scale``, ``healthy_z_range``...); ``self.options`` holds all of them.

    Subclasses set ``spec_id``, ``xml_file``, ``frame_skip``, ``defaults`` (the v5
    options), ``num_skipped_qpos`` (1: x, 2: x and y), ``qvel_noise`` and implement
    :meth:`_reward`.
    """

    default_max_episode_steps = 1000
    xml_file: str
    frame_skip: int
    defaults: dict = {}
    num_skipped_qpos = 1
    qvel_noise = "uniform"
    obs_qvel_clip: float | None = None
    fields: tuple[str, ...] = ()  # extra Data fields read after a step
    post_constraint = False  # run mj_rnePostConstraint (cfrc_ext) after a step
    njmax: int | None = None  # constraint rows per world (None: MuJoCo Warp's guess, 64 here)

    def __init__(self, num_envs: int, *, device="cpu", compile=False, capture=True, **kwargs):
        capture = _check_option("capture", capture, True)
        if compile not in (False, "auto"):
            raise ValueError(
                f"Invalid compile: {compile!r} (expected False or 'auto': a MuJoCo Warp step "
                "runs Warp kernels, which torch.compile cannot trace)"
            )
        base_keys = ("seed", "dtype", "autoreset_mode", "max_episode_steps", "check_actions")
        base_kwargs = {k: kwargs.pop(k) for k in base_keys if k in kwargs}
        self.options = self._check_options(kwargs)
        self.mj_model = load_model(os.path.join(ASSETS, self.xml_file))
        self._adapt_model(self.mj_model)
        self.nq, self.nv = self.mj_model.nq, self.mj_model.nv
        self.dt = float(self.mj_model.opt.timestep) * self.frame_skip
        low, high = self.mj_model.actuator_ctrlrange.astype(np.float32).T
        self.single_action_space = spaces.Box(low=low, high=high, dtype=np.float32)
        super().__init__(num_envs, device=device, compile=False, **base_kwargs)
        self.num_reset_draws = self.nq + self.nv
        self._sim = WarpSimulator(
            self.mj_model, self.num_envs, self.device, self.fields, self.njmax, capture
        )
        self._init_qpos = torch.as_tensor(self.mj_model.qpos0, dtype=torch.float32).to(
            self.device
        )

    @classmethod
    def _check_options(cls, options: dict) -> dict:
        unknown = sorted(set(options) - set(cls.defaults))
        if unknown:
            raise ValueError(
                f"Invalid option(s) for {cls.spec_id}: {unknown} (expected some of "
                f"{sorted(cls.defaults)}, or seed, dtype, autoreset_mode, max_episode_steps, "
                "check_actions, compile, capture)"
            )
        merged = {**cls.defaults, **options}
        return {k: _check_option(k, v, cls.defaults[k]) for k, v in merged.items()}

    def _adapt_model(self, mj_model) -> None:
        """Change what MuJoCo Warp does not support (in place); nothing by default."""

    # ----------------------------------------------------------------- sizes and spaces
    def _extra_obs_size(self) -> int:
        return 0

    def _observation_space(self, dtype: torch.dtype) -> spaces.Box:
        skipped = self.num_skipped_qpos * self.options["exclude_current_positions_from_observation"]
        size = self.nq - skipped + self.nv + self._extra_obs_size()
        np_dtype = np.float32 if dtype == torch.float32 else np.float64
        return spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np_dtype)

    # ----------------------------------------------------------------- the hooks
    def _reset_draws(self, n: int) -> Tensor:
        """``[n, nq + nv]`` for ``n`` resetting envs: uniforms in [0, 1) for qpos, then
        uniforms or standard normals (``qvel_noise``) for qvel."""
        g, shape = self._generator, (n,)
        kw = dict(generator=g, device=self.device, dtype=torch.float32)
        u_qpos = torch.rand(shape + (self.nq,), **kw)
        draw = torch.randn if self.qvel_noise == "normal" else torch.rand
        return torch.cat((u_qpos, draw(shape + (self.nv,), **kw)), 1)

    def _initial_state(self, u: Tensor) -> dict[str, Tensor]:
        s = self.options["reset_noise_scale"]
        u_qpos, u_qvel = u[:, : self.nq], u[:, self.nq :]
        qpos = self._init_qpos + (-s + 2 * s * u_qpos)
        qvel = s * u_qvel if self.qvel_noise == "normal" else -s + 2 * s * u_qvel
        state = {"qpos": qpos, "qvel": qvel, "qacc_warmstart": torch.zeros_like(qvel)}
        return {**state, **self._initial_extras(state)}

    def _initial_extras(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The carried quantities after Gymnasium's reset (``mj_resetData`` +
        ``set_state``, which runs ``mj_forward``) of the ``n`` envs in ``state``."""
        return {}

    def _read_extras(self, views: dict[str, Tensor]) -> dict[str, Tensor]:
        """The carried quantities after a step, copied from the simulator's views."""
        return {}

    def _dynamics(self, physics: dict[str, Tensor], actions: Tensor):
        views = self._sim.step(physics, actions, self.frame_skip, self.post_constraint)
        new = {name: views[name].clone() for name in STATE}
        new.update(self._read_extras(views))
        reward, terminated = self._reward(physics, new, actions)
        return new, reward.to(self.dtype), terminated

    def _reward(self, before, after, actions) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _observe(self, physics: dict[str, Tensor]) -> Tensor:
        qpos, qvel = physics["qpos"], physics["qvel"]
        if self.options["exclude_current_positions_from_observation"]:
            qpos = qpos[:, self.num_skipped_qpos :]
        if self.obs_qvel_clip is not None:
            qvel = qvel.clamp(-self.obs_qvel_clip, self.obs_qvel_clip)
        parts = [qpos, qvel, *self._extra_obs(physics)]
        return torch.cat([p.reshape(len(p), -1) for p in parts], 1).to(self.dtype)

    def _extra_obs(self, physics: dict[str, Tensor]) -> list[Tensor]:
        return []

    # ----------------------------------------------------------------- shared terms
    def _forward_and_ctrl(self, x_before: Tensor, x_after: Tensor, actions: Tensor) -> Tensor:
        """``w_f (x_after - x_before) / dt - w_c |a|^2``."""
        x_velocity = (x_after - x_before).to(self.dtype) / self.dt
        ctrl_cost = self.options["ctrl_cost_weight"] * actions.square().sum(1)
        return self.options["forward_reward_weight"] * x_velocity - ctrl_cost

    def _healthy_terms(self, healthy: Tensor) -> tuple[Tensor, Tensor]:
        """``(h r_h, terminated)`` from the healthy mask."""
        reward = healthy.to(self.dtype) * self.options["healthy_reward"]
        return reward, ~healthy & self.options["terminate_when_unhealthy"]


def _between(x: Tensor, bounds, closed=False) -> Tensor:
    low, high = bounds
    return (low <= x) & (x <= high) if closed else (low < x) & (x < high)


class HalfCheetahEnv(MujocoWarpEnv):
    """HalfCheetah-v5 (Wawrzynski 2009; Gymnasium's ``half_cheetah_v5.py``)."""

    spec_id = "HalfCheetah-v5"
    xml_file, frame_skip, qvel_noise = "half_cheetah.xml", 5, "normal"
    defaults = dict(
        forward_reward_weight=1.0,
        ctrl_cost_weight=0.1,
        reset_noise_scale=0.1,
        exclude_current_positions_from_observation=True,
    )

    def _reward(self, before, after, actions):
        reward = self._forward_and_ctrl(before["qpos"][:, 0], after["qpos"][:, 0], actions)
        return reward, torch.zeros_like(reward, dtype=torch.bool)


class SwimmerEnv(HalfCheetahEnv):
    """Swimmer-v5 (Coulom 2002; Gymnasium's ``swimmer_v5.py``): qpos[0:2] are x, y."""

    spec_id = "Swimmer-v5"
    xml_file, frame_skip, qvel_noise, num_skipped_qpos = "swimmer.xml", 4, "uniform", 2
    defaults = dict(HalfCheetahEnv.defaults, ctrl_cost_weight=1e-4)


class Walker2dEnv(MujocoWarpEnv):
    """Walker2d-v5 (Gymnasium's ``walker2d_v5.py``, model ``walker2d_v5.xml``): healthy
    while ``z`` in ``healthy_z_range`` and the torso angle in ``healthy_angle_range``
    (open intervals); observed velocities clipped to [-10, 10]."""

    spec_id = "Walker2d-v5"
    xml_file, frame_skip, obs_qvel_clip = "walker2d_v5.xml", 4, 10.0
    defaults = dict(
        forward_reward_weight=1.0,
        ctrl_cost_weight=1e-3,
        healthy_reward=1.0,
        terminate_when_unhealthy=True,
        healthy_z_range=(0.8, 2.0),
        healthy_angle_range=(-1.0, 1.0),
        reset_noise_scale=5e-3,
        exclude_current_positions_from_observation=True,
    )

    def _healthy(self, qpos: Tensor, qvel: Tensor) -> Tensor:
        z, angle = qpos[:, 1], qpos[:, 2]
        o = self.options
        return _between(z, o["healthy_z_range"]) & _between(angle, o["healthy_angle_range"])

    def _reward(self, before, after, actions):
        reward = self._forward_and_ctrl(before["qpos"][:, 0], after["qpos"][:, 0], actions)
        healthy = self._healthy(after["qpos"], after["qvel"])
        healthy_reward, terminated = self._healthy_terms(healthy)
        return reward + healthy_reward, terminated


class HopperEnv(Walker2dEnv):
    """Hopper-v5 (Erez et al. 2011; Gymnasium's ``hopper_v5.py``): healthy also needs
    every entry of ``(qpos[2:], qvel)`` in ``healthy_state_range`` (open intervals)."""

    spec_id = "Hopper-v5"
    xml_file = "hopper.xml"
    defaults = dict(
        Walker2dEnv.defaults,
        healthy_state_range=(-100.0, 100.0),
        healthy_z_range=(0.7, math.inf),
        healthy_angle_range=(-0.2, 0.2),
    )

    def _healthy(self, qpos: Tensor, qvel: Tensor) -> Tensor:
        state = torch.cat((qpos[:, 2:], qvel), 1)
        in_range = _between(state, self.options["healthy_state_range"]).all(1)
        return super()._healthy(qpos, qvel) & in_range


class AntEnv(MujocoWarpEnv):
    """Ant-v5 (Schulman et al. 2016; Gymnasium's ``ant_v5.py``): a free-floating torso
    (qpos[0:7]); ``x`` is the torso's ``xpos``; healthy while the state is finite and
    ``z`` is in ``healthy_z_range`` (closed interval); the contact forces ``cfrc_ext``,
    clipped to ``contact_force_range``, enter the cost and (bodies 1:) the observation."""

    spec_id = "Ant-v5"
    xml_file, frame_skip, qvel_noise, num_skipped_qpos = "ant.xml", 5, "normal", 2
    fields, post_constraint = ("xpos", "cfrc_ext"), True
    main_body, njmax = 1, 128  # 12 capsules, a sphere: <= 25 contacts x 4 rows + 8 limits
    defaults = dict(
        forward_reward_weight=1.0,
        ctrl_cost_weight=0.5,
        contact_cost_weight=5e-4,
        healthy_reward=1.0,
        terminate_when_unhealthy=True,
        healthy_z_range=(0.2, 1.0),
        contact_force_range=(-1.0, 1.0),
        reset_noise_scale=0.1,
        exclude_current_positions_from_observation=True,
        include_cfrc_ext_in_observation=True,
    )

    def _extra_obs_size(self):
        return (self.mj_model.nbody - 1) * 6 * self.options["include_cfrc_ext_in_observation"]

    def _initial_extras(self, state):
        # the torso hangs on a free joint: after mj_forward its xpos is qpos[0:3] exactly
        cfrc_ext = state["qpos"].new_zeros(len(state["qpos"]), self.mj_model.nbody, 6)
        return {"main_body_xy": state["qpos"][:, :2], "cfrc_ext": cfrc_ext}

    def _read_extras(self, views):
        xy = views["xpos"][:, self.main_body, :2].clone()
        return {"main_body_xy": xy, "cfrc_ext": views["cfrc_ext"].clone()}

    def _contact_forces(self, physics) -> Tensor:
        return physics["cfrc_ext"].to(self.dtype).clamp(*self.options["contact_force_range"])

    def _reward(self, before, after, actions):
        x0, x1 = before["main_body_xy"][:, 0], after["main_body_xy"][:, 0]
        reward = self._forward_and_ctrl(x0, x1, actions)
        contact_cost = self.options["contact_cost_weight"] * (
            self._contact_forces(after).square().sum((1, 2))
        )
        qpos, qvel = after["qpos"], after["qvel"]
        finite = torch.isfinite(qpos).all(1) & torch.isfinite(qvel).all(1)
        healthy = finite & _between(qpos[:, 2], self.options["healthy_z_range"], closed=True)
        healthy_reward, terminated = self._healthy_terms(healthy)
        return reward + healthy_reward - contact_cost, terminated

    def _extra_obs(self, physics):
        if not self.options["include_cfrc_ext_in_observation"]:
            return []
        return [self._contact_forces(physics)[:, 1:]]


class HumanoidEnv(MujocoWarpEnv):
    """Humanoid-v5 (Tassa et al. 2012; Gymnasium's ``humanoid_v5.py``): ``x`` is the
    centre of mass (``xipos`` weighted by ``body_mass``); healthy while ``z`` is in
    ``healthy_z_range`` (open); observation adds ``cinert``, ``cvel`` and ``cfrc_ext`` of
    bodies 1: and ``qfrc_actuator[6:]``. A reset runs ``mj_forward`` on the drawn states
    (for ``cinert``, ``cvel`` and the centre of mass): one extra forward pass of all worlds
    on each step where some env resets.

    The model asks for MuJoCo's PGS solver, which MuJoCo Warp does not have
    (``NotImplementedError: mjSOL_PGS is unsupported``): the Newton solver stands in. In C
    MuJoCo the two differ by at most 1.4e-5 in ``qpos``/``qvel`` over one env step (5 RK4
    steps) along a 20-step episode under actions in [-0.4, 0.4], the size of the float32
    gap."""

    spec_id = "Humanoid-v5"
    xml_file, frame_skip, num_skipped_qpos = "humanoid.xml", 5, 2
    fields = ("xipos", "cinert", "cvel", "qfrc_actuator", "cfrc_ext")
    post_constraint, njmax = True, 256  # a fallen humanoid: many contacts, 17 joint limits
    defaults = dict(
        forward_reward_weight=1.25,
        ctrl_cost_weight=0.1,
        contact_cost_weight=5e-7,
        contact_cost_range=(-math.inf, 10.0),
        healthy_reward=5.0,
        terminate_when_unhealthy=True,
        healthy_z_range=(1.0, 2.0),
        reset_noise_scale=1e-2,
        exclude_current_positions_from_observation=True,
        include_cinert_in_observation=True,
        include_cvel_in_observation=True,
        include_qfrc_actuator_in_observation=True,
        include_cfrc_ext_in_observation=True,
    )
    _OBS_FIELDS = ("cinert", "cvel", "qfrc_actuator", "cfrc_ext")

    def __init__(self, num_envs: int, **kwargs):
        super().__init__(num_envs, **kwargs)
        mass = torch.as_tensor(self.mj_model.body_mass, dtype=torch.float32)
        self._mass = (mass / mass.sum()).to(self.device)

    def _adapt_model(self, mj_model):
        import mujoco

        mj_model.opt.solver = mujoco.mjtSolver.mjSOL_NEWTON

    def _extra_obs_size(self):
        o, nbody = self.options, self.mj_model.nbody - 1
        sizes = {"cinert": nbody * 10, "cvel": nbody * 6, "qfrc_actuator": self.nv - 6}
        sizes["cfrc_ext"] = nbody * 6
        return sum(n for k, n in sizes.items() if o[f"include_{k}_in_observation"])

    def _carried(self, views, n: int) -> dict[str, Tensor]:
        """Centre of mass and observed quantities of the first ``n`` worlds (copies)."""
        xy = (self._mass[:, None] * views["xipos"][:n]).sum(1)[:, :2]
        carried = {k: views[k][:n].clone() for k in self._OBS_FIELDS}
        return {"mass_center": xy, **carried}

    def _initial_extras(self, state):
        carried = self._carried(self._sim.forward(state), len(state["qpos"]))
        carried["cfrc_ext"].zero_()  # mj_forward leaves cfrc_ext as mj_resetData set it
        return carried

    def _read_extras(self, views):
        return self._carried(views, self.num_envs)

    def _reward(self, before, after, actions):
        x0, x1 = before["mass_center"][:, 0], after["mass_center"][:, 0]
        reward = self._forward_and_ctrl(x0, x1, actions)
        low, high = self.options["contact_cost_range"]
        forces = after["cfrc_ext"].to(self.dtype)
        contact_cost = (self.options["contact_cost_weight"] * forces.square().sum((1, 2)))
        healthy = _between(after["qpos"][:, 2], self.options["healthy_z_range"])
        healthy_reward, terminated = self._healthy_terms(healthy)
        return reward + healthy_reward - contact_cost.clamp(low, high), terminated

    def _extra_obs(self, physics):
        parts = []
        for key in self._OBS_FIELDS:
            if self.options[f"include_{key}_in_observation"]:
                value = physics[key]
                parts.append(value[:, 6:] if key == "qfrc_actuator" else value[:, 1:])
        return parts


WARP_ENVS = {
    cls.spec_id: cls
    for cls in (HalfCheetahEnv, HopperEnv, Walker2dEnv, SwimmerEnv, AntEnv, HumanoidEnv)
}


def make_warp_env(env_id: str, num_envs: int, **kwargs) -> MujocoWarpEnv:
    """A batch of ``num_envs`` copies of the v5 task ``env_id`` on MuJoCo Warp; ``kwargs``
    as :class:`MujocoWarpEnv` (``device``, ``seed``, ``dtype``, ``autoreset_mode``,
    ``max_episode_steps``, ``capture``, the task's v5 options). Without the ``[warp]`` extra it
    raises an ``ImportError`` that names the fix (``pip install -e ".[warp]"``)."""
    if env_id not in WARP_ENVS:
        raise ValueError(f"Invalid env_id: {env_id!r} (expected one of {sorted(WARP_ENVS)})")
    return WARP_ENVS[env_id](num_envs, **kwargs)
