r"""Policies for Gymnasium tasks: linear and MLP networks for Discrete and Box actions,
deterministic (for evolution strategies) or stochastic (for policy gradients).

Public API (stable; other ``rl`` modules build on it)::

    policy = make_policy(env_or_spaces, kind="linear" | "mlp", hidden=(64, 64),
                         stochastic=False, obs_norm=False, actor_critic=False, **kwargs)
    Policy(obs_dim, action_space, hidden=(), activation="tanh", stochastic=False,
           squash="clip", log_std_init=0.0, bias=True, init=None, obs_norm=None)
    LinearPolicy(obs_dim, action_space, **kw)        # Policy with hidden=()
    MLPPolicy(obs_dim, action_space, hidden=(64, 64), **kw)
    ActorCritic(obs_dim, action_space, hidden=(64, 64), critic_hidden=None, **kw)

    policy(obs)                  -> out: logits [..., n] (Discrete) or mean [..., act_dim] (Box)
    policy.distribution(obs)     -> Categorical | Independent(Normal) over *raw* actions
    policy.act(obs, deterministic=None, generator=None) -> raw action
                                    (Discrete: int64 index; Box: mean or mean + std * eps)
    policy.to_env(action)        -> the action env.step takes (in the bounds unless squash="none")
    policy.log_prob(obs, action) -> [...];  policy.entropy(obs) -> [...]
    policy.predict(obs)          -> deterministic env action for one numpy observation (numpy)
    policy.action_from_output(out, deterministic=True) -> env action from a forward's output
    policy.population_forward(params, obs) -> [P, ...] out for P members at once
    policy.population_layers(params) -> prepared per-layer weights for population_forward
    ActorCritic.value(obs)       -> [...] state values from the critic

Actions. ``Discrete(n, start)``: the network outputs ``n`` logits; the deterministic
action is ``argmax``, the stochastic one a sample of ``Categorical(logits)``; ``to_env``
adds ``start``. ``Box(low, high)``: the network outputs the mean ``mu`` of the action;
the stochastic policy is the diagonal Gaussian ``N(mu, exp(log_std)^2)`` with a
state-independent parameter ``log_std``; ``to_env`` maps a raw action ``a`` into the
bounds, either ``squash="clip"``: ``clip(a, low, high)`` (OpenAI-ES, cleanrl) or
``squash="tanh"``: ``low + (tanh(a) + 1) / 2 * (high - low)``, or passes it on unchanged,
``squash="none"`` (ARS's code: ``LinearPolicy.act`` returns ``W @ obs`` and the env gets
it as it is; MuJoCo then clamps the control to its ``ctrlrange`` while the control cost
is computed on the raw action, so actions outside the bounds cost reward instead of
being free). ``log_prob`` is always of the raw action (the squashing is part of the
environment), so policy gradients stay unbiased without a Jacobian term.

Initialisation (``init=None`` picks by kind): linear policies start at zero (ARS: the
first policy is M = 0; ARS's policy has no bias, ``bias=False``); MLPs use orthogonal
weights with gain sqrt(2) on hidden layers, 0.01 on the actor's output and 1 on the
critic's output, biases 0 (cleanrl's PPO).

Observation normalisation: pass ``obs_norm=RunningNorm(obs_dim)`` (or ``obs_norm=True``
to :func:`make_policy`): the policy normalises every observation before its network, and
the normaliser's float64 statistics are buffers, saved with ``policy.state_dict()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from .gym_envs import make_env, resolve_env_id
from .normalization import RunningNorm

__all__ = ["Policy", "LinearPolicy", "MLPPolicy", "ActorCritic", "make_policy", "ACTIVATIONS",
           "SQUASH"]

#: How ``Policy.to_env`` maps a Box action into the env (module docstring).
SQUASH = ("clip", "tanh", "none")

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "elu": nn.functional.elu,
               "gelu": nn.functional.gelu, "silu": nn.functional.silu}


def _check_obs_dim(obs_dim) -> int:
    if isinstance(obs_dim, bool) or not isinstance(obs_dim, (int, np.integer)) or obs_dim < 1:
        raise ValueError(f"Invalid obs_dim: {obs_dim!r} (expected an integer >= 1)")
    return int(obs_dim)


def _check_hidden(hidden) -> tuple[int, ...]:
    if isinstance(hidden, (int, np.integer)) and not isinstance(hidden, bool):
        hidden = (int(hidden),)
    try:
        hidden = tuple(hidden)
    except TypeError:
        raise ValueError(
            f"Invalid hidden: {hidden!r} (expected a sequence of layer widths)") from None
    for h in hidden:
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
            raise ValueError(f"Invalid hidden: {hidden!r} (expected positive integer widths)")
    return tuple(int(h) for h in hidden)


def _mlp(sizes: Sequence[int], bias: bool) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(sizes[:-1], sizes[1:]))


def _init_layers(layers: nn.ModuleList, init: str, out_gain: float) -> None:
    with torch.no_grad():
        for i, layer in enumerate(layers):
            if init == "zeros":
                layer.weight.zero_()
            elif init == "orthogonal":
                gain = out_gain if i == len(layers) - 1 else math.sqrt(2.0)
                nn.init.orthogonal_(layer.weight, gain)
            if layer.bias is not None and init in ("zeros", "orthogonal"):
                layer.bias.zero_()


class Policy(nn.Module):
    """A linear (``hidden=()``) or MLP policy for a ``Discrete`` or ``Box`` action space.

    Args:
        obs_dim: length of the (flattened) observation.
        action_space: a ``gymnasium.spaces.Discrete`` or ``Box``.
        hidden: widths of the hidden layers; ``()`` is a linear policy.
        activation: hidden activation, one of :data:`ACTIVATIONS`.
        stochastic: sample actions by default (``act``); for ``Box`` this adds the
            parameter ``log_std`` (a deterministic Box policy has no distribution).
        squash: how ``to_env`` maps a Box action into its bounds: ``"clip"``, ``"tanh"``,
            or ``"none"`` (the raw action goes to the env unchanged: the env must accept
            actions outside its space, as MuJoCo's envs do, which clamp the control).
        log_std_init: initial value of ``log_std``.
        bias: use biases in the linear layers.
        init: ``"zeros"``, ``"orthogonal"`` or ``"torch"`` (PyTorch's default);
            ``None`` picks ``"zeros"`` for linear and ``"orthogonal"`` for MLP policies.
        obs_norm: a :class:`~rl.normalization.RunningNorm` applied to observations, or None.
    """

    def __init__(
        self,
        obs_dim: int,
        action_space: spaces.Space,
        hidden: Sequence[int] = (),
        activation: str = "tanh",
        stochastic: bool = False,
        squash: str = "clip",
        log_std_init: float = 0.0,
        bias: bool = True,
        init: str | None = None,
        obs_norm: RunningNorm | None = None,
    ):
        super().__init__()
        self.obs_dim = _check_obs_dim(obs_dim)
        self.hidden = _check_hidden(hidden)
        if activation not in ACTIVATIONS:
            raise ValueError(f"Invalid activation: {activation!r} (expected one of "
                             f"{sorted(ACTIVATIONS)})")
        if squash not in SQUASH:
            raise ValueError(f"Invalid squash: {squash!r} (expected 'clip', 'tanh' or 'none')")
        if init is None:
            init = "zeros" if not self.hidden else "orthogonal"
        if init not in ("zeros", "orthogonal", "torch"):
            raise ValueError(f"Invalid init: {init!r} (expected 'zeros', 'orthogonal', 'torch' or "
                             "None)")
        if not isinstance(stochastic, bool):
            raise ValueError(f"Invalid stochastic: {stochastic!r} (expected True or False)")
        if obs_norm is not None and not isinstance(obs_norm, RunningNorm):
            raise ValueError(f"Invalid obs_norm: {type(obs_norm).__name__} (expected a RunningNorm "
                             "or None)")
        if obs_norm is not None and obs_norm.shape != (self.obs_dim,):
            raise ValueError(f"Invalid obs_norm: shape {obs_norm.shape} (expected "
                             f"({self.obs_dim},))")

        self.action_space = action_space
        self.activation = activation
        self.stochastic = stochastic
        self.squash = squash
        self.init = init
        if isinstance(action_space, spaces.Discrete):
            self.discrete = True
            self.act_dim = int(action_space.n)
            self.action_start = int(action_space.start)
        elif isinstance(action_space, spaces.Box):
            if not np.issubdtype(action_space.dtype, np.floating):
                raise ValueError(f"Invalid action_space: {action_space} (expected a floating-point "
                                 "Box)")
            self.discrete = False
            self.act_dim = int(np.prod(action_space.shape))
            low = np.asarray(action_space.low, dtype=np.float64).reshape(-1)
            high = np.asarray(action_space.high, dtype=np.float64).reshape(-1)
            if squash == "tanh" and not (np.isfinite(low).all() and np.isfinite(high).all()):
                raise ValueError("Invalid squash: 'tanh' needs finite bounds, but the action "
                                 f"space is {action_space}")
            self.register_buffer("action_low", torch.as_tensor(low, dtype=torch.float32))
            self.register_buffer("action_high", torch.as_tensor(high, dtype=torch.float32))
        else:
            raise ValueError(
                f"Invalid action_space: {type(action_space).__name__} (expected Discrete or Box)"
            )
        self.obs_norm = obs_norm
        self.layers = _mlp((self.obs_dim, *self.hidden, self.act_dim), bias)
        _init_layers(self.layers, init, out_gain=0.01)
        if stochastic and not self.discrete:
            self.log_std = nn.Parameter(torch.full((self.act_dim,), float(log_std_init)))
        else:
            self.log_std = None

    # ----------------------------------------------------------------- forward
    def normalize(self, obs: Tensor) -> Tensor:
        """The observation as the network sees it: flattened, in the parameters' dtype,
        normalised when the policy has an ``obs_norm``."""
        w = self.layers[0].weight
        obs = torch.as_tensor(obs, device=w.device)
        dtype = w.dtype
        obs = obs.reshape(*obs.shape[: obs.dim() - 1], -1) if obs.dim() else obs.reshape(1)
        if self.obs_norm is not None:
            obs = self.obs_norm(obs.to(torch.float64))
        return obs.to(dtype)

    def _body(self, x: Tensor) -> Tensor:
        act = ACTIVATIONS[self.activation]
        for layer in self.layers[:-1]:
            x = act(layer(x))
        return self.layers[-1](x)

    def forward(self, obs: Tensor) -> Tensor:
        """Logits ``[..., n]`` (Discrete) or the action mean ``[..., act_dim]`` (Box)."""
        return self._body(self.normalize(obs))

    # ----------------------------------------------------------------- actions
    def distribution(self, obs: Tensor) -> Distribution:
        """The action distribution at ``obs`` (over raw, unsquashed actions)."""
        out = self(obs)
        if self.discrete:
            return Categorical(logits=out)
        if self.log_std is None:
            raise ValueError("this Box policy is deterministic (stochastic=False): it has no "
                             "distribution")
        return Independent(Normal(out, self.log_std.exp().expand_as(out)), 1)

    def _sample(self, out: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.discrete:
            probs = torch.softmax(out.reshape(-1, self.act_dim), dim=-1)
            idx = torch.multinomial(probs, 1, generator=generator)
            return idx.reshape(out.shape[:-1])
        if self.log_std is None:
            raise ValueError("this Box policy is deterministic (stochastic=False): it cannot "
                             "sample")
        eps = torch.randn(out.shape, generator=generator, dtype=out.dtype, device=out.device)
        return out + self.log_std.exp() * eps

    def act(self, obs: Tensor, deterministic: bool | None = None,
            generator: torch.Generator | None = None) -> Tensor:
        """A raw action: the mode (argmax / mean) if ``deterministic`` (default: ``not
        stochastic``), else a sample drawn with ``generator``. Map it with :meth:`to_env`."""
        out = self(obs)
        deterministic = (not self.stochastic) if deterministic is None else deterministic
        if deterministic:
            return out.argmax(-1) if self.discrete else out
        return self._sample(out, generator)

    def to_env(self, action: Tensor) -> Tensor:
        """Map raw actions into the action space (``start`` offset, clip or tanh-squash;
        ``squash="none"``: Box actions unchanged)."""
        if self.discrete:
            return action + self.action_start if self.action_start else action
        if self.squash == "none":
            return action
        low, high = self.action_low.to(action.dtype), self.action_high.to(action.dtype)
        if self.squash == "tanh":
            return low + (torch.tanh(action) + 1.0) * 0.5 * (high - low)
        return torch.maximum(torch.minimum(action, high), low)

    def action_from_output(self, out: Tensor, deterministic: bool = True,
                           generator: torch.Generator | None = None) -> Tensor:
        """The env action for a forward's output ``out`` (used by population rollouts)."""
        if deterministic:
            raw = out.argmax(-1) if self.discrete else out
        else:
            raw = self._sample(out, generator)
        return self.to_env(raw)

    def log_prob(self, obs: Tensor, action: Tensor) -> Tensor:
        return self.distribution(obs).log_prob(action)

    def entropy(self, obs: Tensor) -> Tensor:
        return self.distribution(obs).entropy()

    @torch.no_grad()
    def predict(self, obs) -> np.ndarray | int:
        """The deterministic env action for one observation (numpy in, numpy/int out)."""
        a = self.to_env(self.act(torch.as_tensor(np.asarray(obs)), deterministic=True))
        if self.discrete:
            return int(a)
        return a.cpu().numpy().astype(self.action_space.dtype).reshape(self.action_space.shape)

    # --------------------------------------------------------- population path
    def population_layers(self, params: dict[str, Tensor]) -> list[tuple[Tensor, Tensor | None]]:
        """``[(W^T [P, in, out], b [P, 1, out] or None), ...]`` per layer, from
        ``params[name]`` of shape ``[P, *shape]``: prepare once, forward many steps."""
        out = []
        for i in range(len(self.layers)):
            w = params[f"layers.{i}.weight"]
            b = params.get(f"layers.{i}.bias")
            out.append((w.transpose(1, 2), None if b is None else b.unsqueeze(1)))
        return out

    def population_forward(self, params, obs: Tensor, *, normalized: bool = False,
                           small_layers: int = 0) -> Tensor:
        """Forward ``P`` members at once: ``params`` is ``{name: [P, *shape]}`` for every
        parameter of ``self.layers`` (others are ignored) or what :meth:`population_layers`
        returned; ``obs`` is ``[P, obs_dim]`` (member i's observation; already through
        ``obs_norm`` if ``normalized``). Returns ``[P, act_dim]``, the same numbers as
        ``functional_call(self, member_i_params, obs[i])`` for each i, via batched matmuls
        (``baddbmm``), about 1.5x faster than ``torch.func.vmap`` on CPU.

        ``small_layers``: a layer with ``in * out <= small_layers`` weights is computed as
        ``b + sum_k x[:, k, None] * W^T[:, k, :]`` instead (elementwise, so ``torch.compile``
        fuses it with its neighbours; a ``bmm`` of thousands of 4x2 matrices costs more than
        the rest of a CartPole step). Equal to the matmul up to the order of the sums."""
        layers = self.population_layers(params) if isinstance(params, dict) else params
        act = ACTIVATIONS[self.activation]
        x = (obs if normalized else self.normalize(obs)).unsqueeze(1)  # [P, 1, in]
        last = len(layers) - 1
        for i, (wt, b) in enumerate(layers):
            if wt.shape[1] * wt.shape[2] <= small_layers:
                x = (x.transpose(1, 2) * wt).sum(1, keepdim=True)
                x = x if b is None else x + b
            else:
                x = torch.bmm(x, wt) if b is None else torch.baddbmm(b, x, wt)
            if i < last:
                x = act(x)
        return x.squeeze(1)


class LinearPolicy(Policy):
    """A linear policy ``out = W obs + b`` (``Policy`` with ``hidden=()``; zero init, as ARS)."""

    def __init__(self, obs_dim: int, action_space: spaces.Space, **kwargs):
        if kwargs.pop("hidden", ()) not in ((), []):
            raise ValueError("Invalid hidden for LinearPolicy (expected none; use MLPPolicy)")
        super().__init__(obs_dim, action_space, hidden=(), **kwargs)


class MLPPolicy(Policy):
    """An MLP policy (``Policy`` with hidden layers, default ``(64, 64)``, tanh)."""

    def __init__(self, obs_dim: int, action_space: spaces.Space,
                 hidden: Sequence[int] = (64, 64), **kwargs):
        hidden = _check_hidden(hidden)
        if not hidden:
            raise ValueError("Invalid hidden: () (expected at least one hidden layer; use "
                             "LinearPolicy)")
        super().__init__(obs_dim, action_space, hidden=hidden, **kwargs)


class ActorCritic(Policy):
    """A stochastic policy (the actor, this module's ``layers`` and ``log_std``) and a
    separate critic MLP ``critic`` that maps the same (normalised) observation to a value.

    Args:
        critic_hidden: the critic's hidden widths (default: the actor's ``hidden``).
        other arguments: as :class:`Policy` (``stochastic`` is always True).
    """

    def __init__(self, obs_dim: int, action_space: spaces.Space, hidden: Sequence[int] = (64, 64),
                 critic_hidden: Sequence[int] | None = None, **kwargs):
        if kwargs.pop("stochastic", True) is not True:
            raise ValueError("Invalid stochastic for ActorCritic: False (an actor-critic samples "
                             "actions)")
        super().__init__(obs_dim, action_space, hidden=hidden, stochastic=True, **kwargs)
        critic_hidden = self.hidden if critic_hidden is None else _check_hidden(critic_hidden)
        self.critic_hidden = critic_hidden
        self.critic = _mlp((self.obs_dim, *critic_hidden, 1), bias=True)
        _init_layers(self.critic, "orthogonal" if self.init != "torch" else "torch", out_gain=1.0)

    def value(self, obs: Tensor) -> Tensor:
        """The critic's state value ``V(obs)``, shape ``obs.shape[:-1]``."""
        x = self.normalize(obs)
        act = ACTIVATIONS[self.activation]
        for layer in self.critic[:-1]:
            x = act(layer(x))
        return self.critic[-1](x).squeeze(-1)


def _spaces_of(env_or_spaces) -> tuple[spaces.Space, spaces.Space]:
    if isinstance(env_or_spaces, str):  # an env id: read the spaces off one instance
        resolve_env_id(env_or_spaces)
        env = make_env(env_or_spaces)
        try:
            return env.observation_space, env.action_space
        finally:
            env.close()
    if isinstance(env_or_spaces, (tuple, list)) and len(env_or_spaces) == 2:
        return env_or_spaces[0], env_or_spaces[1]
    obs_space = getattr(env_or_spaces, "single_observation_space", None) or getattr(
        env_or_spaces, "observation_space", None)
    act_space = getattr(env_or_spaces, "single_action_space", None) or getattr(
        env_or_spaces, "action_space", None)
    if obs_space is None or act_space is None:
        raise ValueError(
            f"Invalid env_or_spaces: {type(env_or_spaces).__name__} (expected a Gymnasium env id, "
            "an env, a vector env, or an (observation_space, action_space) pair)"
        )
    return obs_space, act_space


def make_policy(env_or_spaces, kind: str = "linear", hidden: Sequence[int] = (64, 64),
                stochastic: bool = False, obs_norm: bool | RunningNorm = False,
                actor_critic: bool = False, obs_clip: float | None = None,
                obs_std_rule: str = "floor",
                **kwargs) -> Policy:
    """Build a policy for a Gymnasium env id, env, vector env, or ``(obs_space, action_space)``.

    Args:
        kind: ``"linear"`` or ``"mlp"`` (``hidden`` is used only for ``"mlp"``).
        stochastic: sample actions (a Gaussian ``log_std`` for Box actions).
        obs_norm: ``True`` to attach a fresh :class:`RunningNorm` (with ``clip=obs_clip``
            and ``std_rule=obs_std_rule``: ``"floor"`` or ARS's ``"ars"``), or a
            ``RunningNorm`` to use.
        actor_critic: return an :class:`ActorCritic` (stochastic actor + critic MLP).
        kwargs: passed to :class:`Policy` (``activation``, ``squash``, ``bias``, ...).
    """
    obs_space, act_space = _spaces_of(env_or_spaces)
    if not isinstance(obs_space, spaces.Box):
        raise ValueError(f"Invalid observation space: {obs_space} (expected a Box)")
    obs_dim = int(np.prod(obs_space.shape))
    if kind not in ("linear", "mlp"):
        raise ValueError(f"Invalid kind: {kind!r} (expected 'linear' or 'mlp')")
    if obs_norm is True:
        norm = RunningNorm(obs_dim, clip=obs_clip, std_rule=obs_std_rule)
    elif obs_norm is False or obs_norm is None:
        norm = None
    else:
        norm = obs_norm
    hidden = () if kind == "linear" else hidden
    if actor_critic:
        return ActorCritic(obs_dim, act_space, hidden=hidden, obs_norm=norm, **kwargs)
    cls = LinearPolicy if kind == "linear" else MLPPolicy
    if kind == "mlp":
        kwargs["hidden"] = hidden
    return cls(obs_dim, act_space, stochastic=stochastic, obs_norm=norm, **kwargs)
