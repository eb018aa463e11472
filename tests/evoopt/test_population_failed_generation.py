"""A generation that fails (every loss non-finite, or the closure raising for every member)
leaves the optimizer as it was before its ask: the center in the parameters, the state
and the random stream (issue 12, item 4). Checked against a twin copied before the failed
generation: afterwards both must take the same next generations (CMA-ES included: its
stream is pycma's sampler's)."""

import copy
import math

import pytest
import torch

from evoopt import population_optimizers

from ._helpers import sphere
from .test_registry import make

NAMES = sorted(population_optimizers())


def _started(name):
    x = torch.nn.Parameter(torch.linspace(-1.0, 2.0, 10))
    opt = make(name, [x], seed=11)
    opt.step(lambda pop: sphere(pop.flat))
    return x, opt


def _same_future(opt, x, twin):
    """Both optimizers take the same next two generations, from the same parameters."""
    (y,) = twin.param_groups[0]["params"]
    assert torch.equal(x.detach(), y.detach())
    for _ in range(2):
        assert float(opt.step(lambda pop: sphere(pop.flat))) == float(
            twin.step(lambda pop: sphere(pop.flat)))
        assert torch.equal(x.detach(), y.detach())


def _raise_all():
    raise ZeroDivisionError("the simulator crashed")


FAILURES = {
    "closure_raises": (lambda x: _raise_all, ZeroDivisionError, "the simulator crashed"),
    "closure_nan": (lambda x: (lambda: (x * math.nan).sum()), ValueError, "state is unchanged"),
    "objective_nan": (lambda x: (lambda pop: sphere(pop.flat) * math.nan), ValueError,
                      "state is unchanged"),
    "objective_raises": (lambda x: (lambda pop: _raise_all()), ZeroDivisionError, "crashed"),
}


@pytest.mark.parametrize("kind", sorted(FAILURES))
@pytest.mark.parametrize("name", NAMES)
def test_failed_step_restores_parameters_state_and_random_stream(name, kind):
    x, opt = _started(name)
    twin = copy.deepcopy(opt)
    center = x.detach().clone()
    make_closure, error, match = FAILURES[kind]
    with pytest.raises(error, match=match):
        opt.step(make_closure(x))
    assert torch.equal(x.detach(), center)  # not the last member evaluated
    assert opt.generation == twin.generation and opt.num_evals == twin.num_evals
    with pytest.raises(RuntimeError, match="without a pending ask"):
        opt.tell(torch.zeros(opt.popsize))  # the failed generation is not pending
    _same_future(opt, x, twin)


@pytest.mark.parametrize("name", NAMES)
def test_failed_tell_restores_the_center_and_rewinds_the_next_ask(name):
    x, opt = _started(name)
    twin = copy.deepcopy(opt)
    center = x.detach().clone()
    pop = opt.ask()
    opt.layout.load_(pop.flat[0])  # an evaluator that loads members into the model
    with pytest.raises(ValueError, match="NaN or infinite; the optimizer's state is unchanged"):
        opt.tell(torch.full((len(pop),), math.nan))
    assert torch.equal(x.detach(), center)
    # abandoning the failed generation: the next ask draws what the failed one drew
    assert torch.equal(opt.ask().flat, twin.ask().flat)
    opt.tell(sphere(pop.flat))
    twin.tell(sphere(pop.flat))
    _same_future(opt, x, twin)


@pytest.mark.parametrize("name", NAMES)
def test_tell_again_after_a_failed_tell_is_the_generation_it_would_have_been(name):
    x, opt = _started(name)
    twin = copy.deepcopy(opt)
    pop, pop_twin = opt.ask(), twin.ask()
    assert torch.equal(pop.flat, pop_twin.flat)
    with pytest.raises(ValueError, match="NaN or infinite"):
        opt.tell(torch.full((len(pop),), math.inf))
    assert float(opt.tell(sphere(pop.flat))) == float(twin.tell(sphere(pop_twin.flat)))
    _same_future(opt, x, twin)
