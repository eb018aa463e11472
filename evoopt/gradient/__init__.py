"""Gradient-side optimizers (plain ``torch.optim.Optimizer``s) that suit policy gradients
and evolution-strategy gradient estimates alike."""

from .clipup import ClipUp
from .kl_adaptive import KLAdaptive
from .natural import NaturalGradient, conjugate_gradient

__all__ = ["ClipUp", "KLAdaptive", "NaturalGradient", "conjugate_gradient"]
