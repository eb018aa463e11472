"""Step hooks (torch's ``register_step_pre_hook`` / ``register_step_post_hook`` and the
global ones) fire once per generation whichever way it runs: pre at ``ask`` or at the
start of ``step``, post at the end of a successful ``tell`` or ``step``."""

import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import evoopt
from evoopt import population_optimizers

from ._helpers import sphere_pop
from .test_registry import make

NAMES = sorted(population_optimizers())


def _hooked(name):
    x = torch.nn.Parameter(torch.full((4,), 1.0))
    opt = make(name, [x], seed=0)
    log = []
    opt.register_step_pre_hook(lambda o, args, kwargs: log.append(("pre", o.generation)))
    opt.register_step_post_hook(lambda o, args, kwargs: log.append(("post", o.generation)))
    return x, opt, log


@pytest.mark.parametrize("name", NAMES)
def test_hooks_fire_once_per_generation_by_step_and_by_ask_tell(name):
    x, opt, log = _hooked(name)
    opt.step(sphere_pop)
    opt.step(lambda: (x**2).sum())  # a torch closure: P member evaluations, one generation
    pop = opt.ask()
    assert log[-1] == ("pre", 2)
    opt.tell(sphere_pop(pop))
    assert log == [("pre", 0), ("post", 1), ("pre", 1), ("post", 2), ("pre", 2), ("post", 3)]


def test_hooks_see_the_arguments_and_post_hooks_skip_a_failed_generation():
    x, opt, log = _hooked("snes")
    seen = []
    opt.register_step_post_hook(lambda o, args, kwargs: seen.append(args[1:]))
    pop = opt.ask()
    losses = sphere_pop(pop)
    with pytest.raises(ValueError, match="NaN or infinite"):
        opt.tell(torch.full((len(pop),), math.nan))
    assert log == [("pre", 0)]
    opt.tell(losses)
    assert log == [("pre", 0), ("post", 1)] and seen[0][0] is losses
    with pytest.raises(ValueError, match="NaN or infinite"):
        opt.step(lambda pop: sphere_pop(pop) * math.nan)
    assert log[-1] == ("pre", 1)  # a pre-hook, no post-hook
    opt.step(sphere_pop)
    assert seen[-1][0] is sphere_pop


def test_global_hooks_fire_for_ask_tell_too():
    x = torch.nn.Parameter(torch.ones(3))
    opt = evoopt.SNES([x], seed=0)
    count = []
    handle = register_optimizer_step_post_hook(
        lambda o, args, kwargs: count.append(o) if o is opt else None)
    try:
        opt.step(sphere_pop)
        pop = opt.ask()
        opt.tell(sphere_pop(pop))
    finally:
        handle.remove()
    assert count == [opt, opt]


def test_a_removed_hook_no_longer_fires():
    x, opt, log = _hooked("pgpe")
    extra = []
    handle = opt.register_step_pre_hook(lambda o, a, k: extra.append(1))
    opt.step(sphere_pop)
    handle.remove()
    opt.ask()
    assert extra == [1]


def test_step_is_a_profiler_range_as_torchs_optimizers_steps_are():
    x = torch.nn.Parameter(torch.ones(3))
    opt = evoopt.SNES([x], seed=0)
    with torch.profiler.profile() as prof:
        opt.step(sphere_pop)
    assert "Optimizer.step#SNES.step" in {e.name for e in prof.events()}
    assert not hasattr(type(opt).step, "hooked")  # no torch wrapper: step fires the hooks


def test_a_pre_hook_may_replace_the_closure_as_with_torchs_optimizers():
    x = torch.nn.Parameter(torch.full((4,), 1.0))
    opt = evoopt.SNES([x], seed=0)
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: ((o, lambda pop: seen.append(1) or
                                                         sphere_pop(pop)), kwargs))
    opt.step(lambda pop: torch.full((len(pop),), math.nan))  # replaced: no all-NaN error
    assert seen == [1] and opt.generation == 1
