"""Gradient-side optimizers (plain ``torch.optim.Optimizer``s) that suit policy gradients
and evolution-strategy gradient estimates alike. Each module adds its own import line below."""

__all__: list[str] = []

from .kl_adaptive import KLAdaptive  # noqa: E402

__all__ += ["KLAdaptive"]

from .natural import NaturalGradient  # noqa: E402

__all__ += ["NaturalGradient"]

from .clipup import ClipUp  # noqa: E402

__all__ += ["ClipUp"]
