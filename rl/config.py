"""The settings of one :func:`rl.train.train` run, resolved and validated once.

:func:`make_config` turns the user's arguments into a :class:`TrainConfig`, in three layers
(the first that has a value wins):

1. the user's arguments (``None`` means "not given");
2. the task's preset, ``rl.defaults.PRESETS[(env_id, optimizer)]`` (keys listed there);
3. the generic defaults :data:`GENERIC` and the generic budget :data:`DEFAULT_BUDGET`.

Dictionaries (``optimizer_kwargs``, ``algo_kwargs``, ``policy_kwargs``, ``rollout_kwargs``)
merge key by key, and a user's key also removes the preset's keys *of the same meaning*
(:data:`SAME_MEANING`: the user's ``sigma`` replaces a preset's ``radius_init``). ``lr``
may be given as ``lr=`` or inside ``optimizer_kwargs``, not both. Settings that do not
apply to the chosen family (``popsize`` for PPO, ``num_envs``, ``grad_optimizer`` or
``algo_kwargs`` for a population optimizer) are refused when the user gives them.

The config is the single source of ``config.json`` (:meth:`TrainConfig.to_json`: only what
applies to the run) and of what a resumed run must match (:meth:`TrainConfig.identity`:
everything that changes the numbers; the budget, the evaluation schedule and the number of
Ray actors may change between a run and its resumption).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import evoopt
from evoopt.checks import check_choice, check_int, check_kwargs
from evoopt.protocols import KLAware

from .algorithms import PPO, Reinforce
from .defaults import DEFAULT_OPTIMIZER, PRESETS
from .normalization import STD_RULES
from .gym_envs import resolve_env_id

__all__ = ["TrainConfig", "make_config", "GENERIC", "DEFAULT_BUDGET", "FALLBACK_OPTIMIZER",
           "GRADIENT_METHODS", "POLICY_KWARGS", "PRESET_KEYS", "SAME_MEANING"]

GRADIENT_METHODS = ("ppo", "reinforce")
#: The optimizer for an env with no ``DEFAULT_OPTIMIZER`` entry.
FALLBACK_OPTIMIZER = "pgpe"
#: Defaults under the presets.
GENERIC: dict[str, Any] = dict(policy="mlp", hidden=(64, 64), popsize=50, num_envs=8,
                               grad_optimizer="adam", obs_std_rule="floor", eval_every=10,
                               eval_episodes=10)
#: The budget when neither the user nor the preset gives one.
DEFAULT_BUDGET: dict[str, int] = {"total_timesteps": 1_000_000}
#: The Policy settings ``policy_kwargs`` may hold (saved with the policy).
POLICY_KWARGS = ("bias", "squash", "activation")
#: Keys that say the same thing: a user's key drops the preset's others of its group.
SAME_MEANING: tuple[frozenset[str], ...] = (frozenset({"sigma", "radius_init"}),)
#: The keys a preset may hold (``rl/defaults.py``); any other is refused, so a typo in the
#: table is an error rather than a setting silently left out.
PRESET_KEYS = ("policy", "hidden", "lr", "popsize", "num_envs", "obs_norm", "obs_std_rule",
               "eval_every", "eval_episodes",
               "policy_kwargs", "optimizer_kwargs", "algo_kwargs", "grad_optimizer",
               "total_timesteps", "iterations", "rollout_kwargs", "target_return")
#: Settings that do not change the numbers of a run: they may differ on resume.
RESUMABLE = ("total_timesteps", "iterations", "target_return", "eval_every", "eval_episodes",
             "eval_seed", "checkpoint_every", "rollout_kwargs.num_actors")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one run, resolved; ``sources[key]`` says where it came from
    (``"user"``, ``"preset"`` or ``"default"``)."""

    env_id: str
    optimizer: str
    policy: str
    hidden: tuple[int, ...]
    obs_norm: bool
    obs_std_rule: str
    policy_kwargs: dict[str, Any]
    lr: float | None
    optimizer_kwargs: dict[str, Any]
    popsize: int | None  # population optimizers
    grad_optimizer: str | None  # ppo / reinforce
    num_envs: int | None  # ppo / reinforce
    algo_kwargs: dict[str, Any]  # ppo / reinforce, with reset_every and total_timesteps for PPO
    rollout_kwargs: dict[str, Any]
    total_timesteps: int | None
    iterations: int | None
    target_return: float | None
    seed: int
    eval_every: int
    eval_episodes: int
    eval_seed: int
    checkpoint_every: int
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def gradient(self) -> bool:
        return self.optimizer in GRADIENT_METHODS

    @property
    def spec(self) -> dict[str, Any]:
        """The policy's spec, saved with it (``rl.train.save_policy``)."""
        spec = {"env_id": self.env_id, "kind": self.policy, "hidden": list(self.hidden),
                "obs_norm": self.obs_norm, "actor_critic": self.optimizer == "ppo",
                "stochastic": self.gradient}
        if self.obs_std_rule != "floor" or self.policy_kwargs:  # (older files have neither)
            spec.update(obs_std_rule=self.obs_std_rule, policy_kwargs=dict(self.policy_kwargs))
        return spec

    def to_json(self) -> dict[str, Any]:
        """The settings that apply to this run, as plain JSON values (``config.json``)."""
        keys = ["env_id", "optimizer", "policy", "hidden", "obs_norm", "obs_std_rule",
                "policy_kwargs", "lr", "optimizer_kwargs"]
        keys += (["grad_optimizer", "num_envs", "algo_kwargs"] if self.gradient
                 else ["popsize"])
        keys += ["rollout_kwargs", "total_timesteps", "iterations", "target_return", "seed",
                 "eval_every", "eval_episodes", "eval_seed", "checkpoint_every"]
        if self.policy == "linear":
            keys.remove("hidden")
        if not self.obs_norm:
            keys.remove("obs_std_rule")
        out = {k: _plain(getattr(self, k)) for k in keys}
        out = {k: v for k, v in out.items() if v is not None and v != {}}
        out["sources"] = {k: v for k, v in self.sources.items() if k in out or k == "budget"}
        return out

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the saved one (flat ``"config.<key>"``
        entries of plain values, so that a mismatch lists each differing setting)."""
        flat: dict[str, Any] = {}
        for k, v in self.to_json().items():
            if k == "sources":
                continue
            if isinstance(v, dict):
                flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
            else:
                flat[k] = v
        return {f"config.{k}": v for k, v in flat.items() if k not in RESUMABLE}


def _plain(v):
    """A JSON value standing for ``v``: tuples become lists, classes and functions their
    qualified names, ``functools.partial`` objects ``name(k=v, ...)``."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else repr(v)
    if isinstance(v, functools.partial):
        args = [repr(_plain(a)) for a in v.args]
        args += [f"{k}={_plain(x)!r}" for k, x in v.keywords.items()]
        return f"{_plain(v.func)}({', '.join(args)})"
    if hasattr(v, "__qualname__"):
        return f"{getattr(v, '__module__', '')}.{v.__qualname__}"
    return repr(v)


def _layer(name: str, user, preset: dict, default, sources: dict):
    """The user's value, else the preset's, else ``default``; records the source."""
    if user is not None:
        sources[name] = "user"
        return user
    if name in preset:
        sources[name] = "preset"
        return preset[name]
    sources[name] = "default"
    return default


def _merge(name: str, user: dict | None, preset: dict, sources: dict) -> dict[str, Any]:
    """The preset's dict under the user's; a user's key drops the preset's keys that mean the
    same (:data:`SAME_MEANING`)."""
    user = dict(user or {})
    base = dict(preset.get(name, {}))
    for group in SAME_MEANING:
        if group & set(user):
            base = {k: v for k, v in base.items() if k not in group}
    if user or base:
        sources[name] = "user" if not base else ("preset" if not user else "user+preset")
    return {**base, **user}


def _refuse_foreign(optimizer: str, gradient: bool, given: dict[str, Any]) -> None:
    """Refuse user settings that the chosen family would ignore."""
    only = ("num_envs", "grad_optimizer", "algo_kwargs") if not gradient else ("popsize",)
    family = "ppo and reinforce" if not gradient else "population optimizers"
    for k in only:
        if given.get(k) not in (None, {}):
            raise ValueError(f"Invalid {k}={given[k]!r} for {optimizer!r}: it applies to "
                             f"{family} only (expected no {k})")
    for k in ("num_actors", "backend", "device", "compile"):
        if gradient and (given.get("rollout_kwargs") or {}).get(k) is not None:
            raise ValueError(f"Invalid {k} for {optimizer!r}: it applies to population "
                             "rollouts (expected a population optimizer, or no " + k + ")")


def _resolve_optimizer(env_id: str, optimizer: str | None, sources: dict) -> str:
    if optimizer is None:
        sources["optimizer"] = "preset" if env_id in DEFAULT_OPTIMIZER else "default"
        optimizer = DEFAULT_OPTIMIZER.get(env_id, FALLBACK_OPTIMIZER)
    else:
        sources["optimizer"] = "user"
    optimizer = str(optimizer).lower()
    if optimizer not in GRADIENT_METHODS and optimizer not in evoopt.population_optimizers():
        names = sorted([*GRADIENT_METHODS, *evoopt.population_optimizers()])
        raise ValueError(f"Invalid optimizer: {optimizer!r} (expected one of {names})")
    return optimizer


def _budget(total_timesteps, iterations, preset: dict, sources: dict):
    if total_timesteps is not None or iterations is not None:
        sources["budget"] = "user"
        budget = {"total_timesteps": total_timesteps, "iterations": iterations}
    elif "total_timesteps" in preset or "iterations" in preset:
        sources["budget"] = "preset"
        budget = {k: preset.get(k) for k in ("total_timesteps", "iterations")}
    else:
        sources["budget"] = "default"
        budget = {"total_timesteps": None, "iterations": None, **DEFAULT_BUDGET}
    return tuple(None if budget[k] is None else check_int(k, budget[k])
                 for k in ("total_timesteps", "iterations"))


def _grad_optimizer(name: str):
    """The torch optimizer class for PPO / REINFORCE; errors list the gradient ones only."""
    population = evoopt.population_optimizers()
    grads = sorted(k for k in evoopt.OPTIMIZERS if k not in population)
    if name in population:
        raise ValueError(f"Invalid grad_optimizer: {name!r} is a population optimizer "
                         f"(expected a gradient optimizer, one of {grads})")
    if name not in grads:
        raise ValueError(f"Invalid grad_optimizer: {name!r} (expected one of {grads})")
    return evoopt.OPTIMIZERS[name]


def _split_lr(lr, kwargs: dict, who: str) -> tuple[Any, dict]:
    """``lr`` given either as ``lr=`` or inside ``optimizer_kwargs``, not both."""
    if "lr" in kwargs:
        if lr is not None:
            raise ValueError(f"Invalid lr: {who} gives lr={lr!r} and optimizer_kwargs lr="
                             f"{kwargs['lr']!r} (expected one of them)")
        kwargs = dict(kwargs)
        lr = kwargs.pop("lr")
    return lr, kwargs


def make_config(
    env_id: str,
    *,
    optimizer: str | None = None,
    policy: str | None = None,
    total_timesteps: int | None = None,
    iterations: int | None = None,
    hidden: tuple[int, ...] | None = None,
    obs_norm: bool | None = None,
    obs_std_rule: str | None = None,
    policy_kwargs: dict[str, Any] | None = None,
    popsize: int | None = None,
    lr: float | None = None,
    grad_optimizer: str | None = None,
    num_envs: int | None = None,
    seed: int = 0,
    eval_every: int | None = None,
    eval_episodes: int | None = None,
    eval_seed: int = 1_000_000,
    checkpoint_every: int | None = None,
    target_return: float | None = None,
    optimizer_kwargs: dict[str, Any] | None = None,
    algo_kwargs: dict[str, Any] | None = None,
    rollout_kwargs: dict[str, Any] | None = None,
    use_presets: bool = True,
) -> TrainConfig:
    """Resolve and validate the settings of a run; see the module docstring."""
    resolve_env_id(env_id)
    src: dict[str, str] = {}
    optimizer = _resolve_optimizer(env_id, optimizer, src)
    gradient = optimizer in GRADIENT_METHODS
    _refuse_foreign(optimizer, gradient, dict(
        num_envs=num_envs, grad_optimizer=grad_optimizer, algo_kwargs=algo_kwargs,
        popsize=popsize, rollout_kwargs=rollout_kwargs))
    preset = dict(PRESETS.get((env_id, optimizer), {})) if use_presets else {}
    unknown = sorted(set(preset) - set(PRESET_KEYS))
    if unknown:
        raise ValueError(f"Invalid preset for {(env_id, optimizer)}: unknown keys {unknown} "
                         f"(expected some of {list(PRESET_KEYS)}; see rl/defaults.py)")
    seed = check_int("seed", seed, minimum=0)
    total_timesteps, iterations = _budget(total_timesteps, iterations, preset, src)
    policy_settings = _policy_settings(policy, hidden, obs_norm, obs_std_rule, policy_kwargs,
                                       preset, gradient, src)
    user_lr, user_kw = _split_lr(lr, dict(optimizer_kwargs or {}), "the user")
    preset_lr, preset_kw = _split_lr(preset.get("lr"), preset.get("optimizer_kwargs", {}),
                                     "the preset")
    lr = _layer("lr", user_lr, {"lr": preset_lr} if preset_lr is not None else {}, None, src)
    opt_kw = _merge("optimizer_kwargs", user_kw, {"optimizer_kwargs": preset_kw}, src)
    roll_kw = _merge("rollout_kwargs", rollout_kwargs, preset, src)
    if roll_kw.get("num_actors") is not None:
        check_int("num_actors", roll_kw["num_actors"])
    target = _layer("target_return", target_return, preset, None, src)
    if checkpoint_every is None:  # PPO resets its envs at checkpoints: not too often
        checkpoint_every = 50 if optimizer == "ppo" else 10
    common = dict(env_id=env_id, optimizer=optimizer, **policy_settings, lr=lr,
                  rollout_kwargs=roll_kw,
                  total_timesteps=total_timesteps, iterations=iterations,
                  target_return=None if target is None else float(target), seed=seed,
                  eval_every=check_int("eval_every", _layer(
                      "eval_every", eval_every, preset, GENERIC["eval_every"], src)),
                  eval_episodes=check_int("eval_episodes", _layer(
                      "eval_episodes", eval_episodes, preset, GENERIC["eval_episodes"], src)),
                  eval_seed=check_int("eval_seed", eval_seed, minimum=0),
                  checkpoint_every=check_int("checkpoint_every", checkpoint_every), sources=src)
    if gradient:
        return _gradient_config(common, opt_kw, grad_optimizer, num_envs, algo_kwargs, preset)
    return _population_config(common, opt_kw, popsize, preset)


def _policy_settings(policy, hidden, obs_norm, obs_std_rule, policy_kwargs, preset: dict,
                     gradient: bool, src: dict) -> dict[str, Any]:
    """The policy's settings of a config (``policy``, ``hidden``, ``obs_norm``,
    ``obs_std_rule``, ``policy_kwargs``): the user's, else the preset's, else generic."""
    pol = _layer("policy", policy, preset, GENERIC["policy"], src)
    if pol not in ("linear", "mlp"):
        raise ValueError(f"Invalid policy: {pol!r} (expected 'linear' or 'mlp')")
    if pol == "linear" and hidden is not None:
        raise ValueError(f"Invalid hidden={tuple(hidden)!r} with policy 'linear': a linear policy "
                         "has no hidden layers (expected policy='mlp', or no hidden)")
    hidden = tuple(_layer("hidden", hidden, preset, GENERIC["hidden"], src))
    for h in hidden:
        check_int("hidden", h)
    obs_norm = bool(_layer("obs_norm", obs_norm, preset, not gradient, src))
    if obs_std_rule is not None and not obs_norm:
        raise ValueError(f"Invalid obs_std_rule={obs_std_rule!r} without observation "
                         "normalisation (expected obs_norm=True / --obs-norm, or no obs_std_rule)")
    obs_std_rule = check_choice("obs_std_rule", _layer("obs_std_rule", obs_std_rule, preset,
                                                       GENERIC["obs_std_rule"], src), STD_RULES)
    pol_kw = _merge("policy_kwargs", policy_kwargs, preset, src)
    unknown = sorted(set(pol_kw) - set(POLICY_KWARGS))
    if unknown:
        raise ValueError(f"Invalid policy_kwargs: {unknown} "
                         f"(expected keys among {list(POLICY_KWARGS)})")
    return dict(policy=pol, hidden=hidden, obs_norm=obs_norm, obs_std_rule=obs_std_rule,
                policy_kwargs=pol_kw)


def _population_config(common: dict, opt_kw: dict, popsize, preset: dict) -> TrainConfig:
    src, optimizer, lr = common["sources"], common["optimizer"], common["lr"]
    for k in ("popsize", "seed"):
        if k in opt_kw:
            raise ValueError(f"Invalid optimizer_kwargs: {k!r} (give it as {k}=, --{k})")
    check_kwargs(f"optimizer_kwargs for {optimizer!r}", evoopt.get_optimizer(optimizer),
                 {"lr": lr, **opt_kw}, taken=("self", "params", "popsize", "seed"))
    popsize = check_int("popsize", _layer("popsize", popsize, preset, GENERIC["popsize"], src))
    return TrainConfig(**common, optimizer_kwargs=opt_kw, popsize=popsize, grad_optimizer=None,
                       num_envs=None, algo_kwargs={})


def _gradient_config(common: dict, opt_kw: dict, grad_optimizer, num_envs, algo_kwargs,
                     preset: dict) -> TrainConfig:
    src, optimizer = common["sources"], common["optimizer"]
    grad_optimizer = str(_layer("grad_optimizer", grad_optimizer, preset,
                                GENERIC["grad_optimizer"], src)).lower()
    opt_cls = _grad_optimizer(grad_optimizer)
    check_kwargs(f"optimizer_kwargs for {grad_optimizer!r}", opt_cls,
                 {"lr": common["lr"], **opt_kw} if common["lr"] is not None else opt_kw)
    num_envs = check_int("num_envs", _layer("num_envs", num_envs, preset, GENERIC["num_envs"], src))
    algo = PPO if optimizer == "ppo" else Reinforce
    alg_kw = _merge("algo_kwargs", algo_kwargs, preset, src)
    check_kwargs(f"algo_kwargs for {optimizer!r}", algo, alg_kw,
                 taken=("self", "envs", "agent", "optimizer", "seed"))
    if issubclass(opt_cls, KLAware) and algo is PPO:  # the KL sets the lr: no annealing on top
        if (algo_kwargs or {}).get("anneal_lr"):
            raise ValueError(f"Invalid anneal_lr=True with grad_optimizer {grad_optimizer!r} "
                             "(its KL target sets the learning rate; expected anneal_lr=False)")
        alg_kw["anneal_lr"] = False
    if algo is PPO:
        alg_kw.setdefault("reset_every", common["checkpoint_every"])
        if common["total_timesteps"] is not None:
            alg_kw.setdefault("total_timesteps", common["total_timesteps"])
    return TrainConfig(**common, optimizer_kwargs=opt_kw, popsize=None,
                       grad_optimizer=grad_optimizer, num_envs=num_envs, algo_kwargs=alg_kw)
