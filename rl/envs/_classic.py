"""``ClassicControlEnv``: the state of a classic-control env as one contiguous ``[N]``
tensor per variable inside the step, and as Gymnasium's ``state`` row, ``[N, d]``, in
``get_state``/``set_state``."""

from __future__ import annotations

import torch

from .base import TorchVectorEnv


def round32(x):
    """``x`` rounded to float32, in x's dtype (Gymnasium stores some states as float32)."""
    return x.to(torch.float32).to(x.dtype)


class ClassicControlEnv(TorchVectorEnv):
    #: the state variables, in the order of Gymnasium's ``env.unwrapped.state``
    state_names: tuple[str, ...] = ()

    def _export_state(self, physics):
        return {"state": torch.stack([physics[k] for k in self.state_names], 1)}

    def _import_state(self, state):
        return {k: v.contiguous() for k, v in zip(self.state_names, state["state"].unbind(1))}

    def _observe(self, physics):
        return torch.stack([physics[k] for k in self.state_names], 1)
