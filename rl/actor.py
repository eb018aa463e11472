r"""The batched policy step of population rollouts: per-slot parameters in, actions out.

Public API::

    member_params(policy, pop) -> {name: [P, *shape]}   # from a Population or a [P, D] tensor
    expand_members(params, k)  -> {name: [P * k, *shape]}  # member i -> slots i*k .. i*k+k-1
    Actor(policy, action_space)         # numpy observations (the gymnasium backend)
    DeviceActor(policy, action_space)   # torch observations on the policy's device

Both actors run the whole population's forward in one batched call: a
:class:`rl.policies.Policy` through its ``population_forward`` (``baddbmm`` over the
stacked layers), any other ``nn.Module`` through ``torch.func.vmap`` over
``functional_call``. The observation normaliser is frozen for a rollout: each slot sees
``clip((obs - mean) / std)`` computed in float64 (:meth:`RunningNorm.forward`'s operations).
Discrete actions are the argmax of the logits (the first maximum) plus ``space.start``; Box
actions are the output (plus optional Gaussian noise, before the bounds) mapped into the
bounds by the policy (``Policy.action_from_output``) or clipped.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from .policies import Policy

__all__ = ["Actor", "DeviceActor", "expand_members", "member_params"]


class _ActorBase:
    """What both actors know of the policy and the action space."""

    def __init__(self, policy: nn.Module, action_space: spaces.Space):
        self.policy = policy
        self.space = action_space
        self.discrete = isinstance(action_space, spaces.Discrete)
        if not self.discrete and not isinstance(action_space, spaces.Box):
            raise ValueError(f"Invalid action space: {action_space} (expected Discrete or Box)")
        self.fast = isinstance(policy, Policy)
        if not self.discrete:  # float64 bounds, flat
            self.low = torch.as_tensor(np.asarray(action_space.low, dtype=np.float64).reshape(-1))
            self.high = torch.as_tensor(np.asarray(action_space.high, dtype=np.float64).reshape(-1))


class Actor(_ActorBase):
    """Batched actions for M slots from per-slot parameters, observations in numpy (the
    gymnasium backend): ``prepare(params)`` once per rollout, then ``outputs`` and
    ``actions`` at every step."""

    def prepare(self, params: dict[str, Tensor]):
        """Per-call constants: the stacked layer weights and the frozen normaliser (numpy,
        float64: the same IEEE operations as ``RunningNorm.forward``, with less overhead)."""
        first = next(iter(params.values()))
        if not self.fast:
            return params, None, first.dtype, first.device
        norm = self.policy.obs_norm
        frozen = None
        if norm is not None:
            frozen = (norm.mean.cpu().numpy().copy(), norm.std.cpu().numpy().copy(), norm.clip)
        layers = self.policy.population_layers(params)
        return layers, frozen, first.dtype, first.device

    def outputs(self, prepared, obs: np.ndarray) -> Tensor:
        """The policy's outputs [M, k] for the observations ``obs`` [M, ...] (numpy)."""
        params, frozen, dtype, device = prepared
        obs = obs.reshape(obs.shape[0], -1)
        if frozen is not None:
            mean, std, clip = frozen
            obs = (obs.astype(np.float64) - mean) / std
            if clip is not None:
                obs = np.clip(obs, -clip, clip)
        x = torch.from_numpy(obs).to(device=device, dtype=dtype)
        if self.fast:
            return self.policy.population_forward(params, x, normalized=True)
        call = lambda p, o: torch.func.functional_call(self.policy, p, (o,))  # noqa: E731
        return torch.func.vmap(call)(params, x)

    def actions(self, out: Tensor, out_np: np.ndarray, noise: Tensor | None) -> np.ndarray:
        """Env actions (numpy) from the forward's output (noise is added before the bounds)."""
        if self.discrete:  # numpy's argmax, like torch's, returns the first maximum
            return out_np.argmax(-1) + int(self.space.start)
        if noise is not None:
            out = out + noise.to(device=out.device, dtype=out.dtype)
        if self.fast:
            return self.policy.action_from_output(out, deterministic=True).cpu().numpy()
        out = out.reshape(out.shape[0], -1)
        low, high = self.low.to(out.device, out.dtype), self.high.to(out.device, out.dtype)
        return torch.maximum(torch.minimum(out, high), low).cpu().numpy()


def member_params(policy: nn.Module, pop, P: int | None = None) -> dict[str, Tensor]:
    """{name: [P, *shape]} for every parameter of ``policy`` from a Population or [P, D]."""
    named = list(policy.named_parameters())
    if isinstance(pop, Tensor):
        flat = pop.detach()
        D = sum(p.numel() for _, p in named)
        if flat.dim() != 2 or flat.shape[1] != D:
            raise ValueError(
                f"Invalid population: tensor of shape {tuple(flat.shape)} (expected [P, {D}], the "
                "policy's parameters flattened in policy.parameters() order)"
            )
        out, a = {}, 0
        for name, p in named:
            out[name] = flat[:, a:a + p.numel()].reshape(flat.shape[0], *p.shape)
            a += p.numel()
        return out
    layout = getattr(pop, "layout", None)
    if layout is None:
        raise ValueError(f"Invalid population: {type(pop).__name__} (expected an evoopt "
                         "Population or a [P, D] tensor)")
    tensors = pop.tensors()
    index = {id(p): i for i, p in enumerate(layout.params)}
    own = {id(p) for _, p in named}
    for n, p in zip(layout.names, layout.params):
        if id(p) not in own:
            raise ValueError(
                f"Invalid population: parameter {n!r} of the optimizer is not a parameter of the "
                "policy (build the optimizer from policy.parameters())"
            )
    P = pop.flat.shape[0]
    return {name: tensors[index[id(p)]] if id(p) in index else p.detach().expand(P, *p.shape)
            for name, p in named}


def expand_members(params: dict[str, Tensor], k: int) -> dict[str, Tensor]:
    """Each member's parameters repeated ``k`` times (member i -> slots i*k .. i*k+k-1)."""
    return params if k == 1 else {n: t.repeat_interleave(k, dim=0) for n, t in params.items()}


class DeviceActor(_ActorBase):
    """Batched actions for M slots with observations as tensors on the policy's device (the
    torch and warp backends). Nothing leaves the device: ``step`` returns the env actions
    and a mask of the slots whose output is NaN/inf (their action is replaced by a valid
    one, ``space.start`` or zeros, so that the env never sees a NaN)."""

    #: layers with at most this many weights are computed elementwise (see
    #: ``Policy.population_forward``): linear CartPole/Pendulum/Swimmer policies
    small_layers = 256

    def __init__(self, policy: nn.Module, action_space: spaces.Space):
        super().__init__(policy, action_space)  # the space's checks, ``low``/``high``
        self.start = int(action_space.start) if self.discrete else 0
        #: width of the policy's output: logits (Discrete) or the flattened action (Box)
        shape = (action_space.n,) if self.discrete else action_space.shape
        self.num_outputs = int(np.prod(shape))

    def prepare(self, params: dict[str, Tensor]):
        """Per-rollout constants: the stacked layers (or the params) and the frozen
        normaliser's ``(mean, std, clip)`` on its device (float64)."""
        norm = getattr(self.policy, "obs_norm", None) if self.fast else None  # others: inside
        frozen = None if norm is None else (norm.mean.clone(), norm.std.clone(), norm.clip)
        layers = self.policy.population_layers(params) if self.fast else params
        first = next(iter(params.values()))
        return layers, frozen, first.dtype

    @staticmethod
    def center(prepared, obs: Tensor) -> Tensor:
        """``obs - mean`` in float64, ``[M, obs_dim]`` (``obs`` itself without a normaliser)."""
        x = obs.reshape(obs.shape[0], -1).to(torch.float64)
        frozen = prepared[1]
        return x if frozen is None else x - frozen[0]

    def outputs(self, prepared, obs: Tensor, centered: Tensor | None = None) -> Tensor:
        """The policy's outputs ``[M, k]`` for the observations ``obs`` ``[M, ...]``, from
        ``clip((obs - mean) / std)`` (``centered``: ``obs - mean`` computed already)."""
        layers, frozen, dtype = prepared
        x = self.center(prepared, obs) if centered is None else centered
        if frozen is not None:
            x = x / frozen[1]
            x = x if frozen[2] is None else x.clamp(-frozen[2], frozen[2])
        x = x.to(dtype)
        if self.fast:
            return self.policy.population_forward(layers, x, normalized=True,
                                                  small_layers=self.small_layers)
        call = lambda p, o: torch.func.functional_call(self.policy, p, (o,))  # noqa: E731
        return torch.func.vmap(call)(layers, x).reshape(x.shape[0], -1)

    def actions(self, out: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(actions, bad)``: env actions from the outputs and the mask of non-finite rows."""
        bad = ~torch.isfinite(out).all(-1)
        if self.discrete:
            a = out.argmax(-1)
            return (a + self.start if self.start else a), bad
        out = torch.where(bad.unsqueeze(-1), torch.zeros_like(out), out)
        if noise is not None:
            out = out + noise.to(out.dtype)
        if self.fast:
            return self.policy.action_from_output(out, deterministic=True), bad
        low, high = self.low.to(out.device, out.dtype), self.high.to(out.device, out.dtype)
        return torch.maximum(torch.minimum(out, high), low), bad
