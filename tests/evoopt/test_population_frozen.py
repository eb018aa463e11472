"""Frozen parameters (``requires_grad=False``) are left alone, as torch's optimizers leave
them: they are not part of the search vector and never written (issue 12, item 10). The
search vector is fixed when the optimizer is built: freezing or unfreezing a parameter
later is refused at the next generation."""

import pytest
import torch

import evoopt
from evoopt import population_optimizers

from .test_registry import make

NAMES = sorted(population_optimizers())


def _model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    for p in model[0].parameters():
        p.requires_grad_(False)
    return model


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 3, generator=g)
    return x, x.sum(-1, keepdim=True)


@pytest.mark.parametrize("mode", ["vmap_objective", "closure"])
@pytest.mark.parametrize("name", NAMES)
def test_frozen_parameters_are_not_searched_nor_written(name, mode):
    model = _model()
    x, y = _data()
    frozen = [p.detach().clone() for p in model[0].parameters()]
    trained = [p.detach().clone() for p in model[2].parameters()]
    model[0].weight.grad = torch.ones_like(model[0].weight)  # a stale gradient: still left alone
    probe = make(name, model.named_parameters(), seed=0)
    assert list(probe.ask().params()) == ["2.weight", "2.bias"]
    opt = make(name, model.named_parameters(), seed=0)
    assert opt.num_params == 4 + 1
    mse = torch.nn.functional.mse_loss
    if mode == "vmap_objective":
        objective = evoopt.vmap_objective(model, mse, x, y)
    else:
        def objective():
            return mse(model(x), y)
    for _ in range(3):
        opt.step(objective)
    assert all(torch.equal(p.detach(), f) for p, f in zip(model[0].parameters(), frozen))
    assert not all(torch.equal(p.detach(), t) for p, t in zip(model[2].parameters(), trained))
    torch.testing.assert_close(torch.cat([p.detach().reshape(-1) for p in model[2].parameters()]),
                               opt.mean.to(torch.float32))


@pytest.mark.parametrize("change", ["freeze", "unfreeze"])
@pytest.mark.parametrize("name", ["pgpe", "snes"])
def test_freezing_or_unfreezing_after_construction_is_refused(name, change):
    model = _model()
    x, y = _data()
    opt = make(name, model.named_parameters(), seed=0)
    objective = evoopt.vmap_objective(model, torch.nn.functional.mse_loss, x, y)
    opt.step(objective)
    mean = opt.mean.clone()
    if change == "freeze":
        model[2].bias.requires_grad_(False)
        match = r"Invalid parameter '2.bias' \(shape \(1,\)\): frozen \(requires_grad=False\) after"
    else:
        model[0].weight.requires_grad_(True)
        match = r"Invalid parameter '0.weight' \(shape \(4, 3\)\): unfrozen \(requires_grad=True\)"
    with pytest.raises(ValueError, match=match + ".*build a new optimizer"):
        opt.step(objective)
    assert torch.equal(opt.mean, mean) and opt.generation == 1


def test_an_optimizer_over_frozen_parameters_only_is_refused():
    model = _model()
    with pytest.raises(ValueError, match="no parameter to search: all 2 are nn.Parameters with "
                                         "requires_grad=False"):
        evoopt.SNES(model[0].parameters())


def test_plain_tensors_are_searched_whatever_their_requires_grad():
    x = torch.zeros(3)  # a black-box vector: requires_grad=False by default
    opt = evoopt.SNES([x], sigma=0.5, seed=0)
    assert opt.num_params == 3
    opt.step(lambda pop: ((pop.flat - 1) ** 2).sum(-1))
    assert not torch.equal(x, torch.zeros(3))
