"""DESIGN.md's promise: one user training loop runs Adam, SGD, LBFGS and every population
optimizer, changing only the line that builds the optimizer."""

import pytest
import torch

import evoopt
from evoopt import population_optimizers

from .test_registry import ROWS


def make_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g)
    y = torch.tanh(x @ torch.tensor([0.8, -0.5, 0.3, 0.1])).unsqueeze(-1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    return model, x, y


def train(build, steps):
    model, x, y = make_problem()
    loss_fn = torch.nn.MSELoss()
    opt = build(model.parameters())  # <- the one line that differs
    with torch.no_grad():
        start = float(loss_fn(model(x), y))

    def closure():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        if torch.is_grad_enabled():  # population optimizers call the closure under no_grad
            loss.backward()
        return loss

    for _ in range(steps):
        loss = opt.step(closure)
        assert loss.dim() == 0 or isinstance(loss, torch.Tensor)
    with torch.no_grad():
        return start, float(loss_fn(model(x), y))


GRADIENT = {
    "adam": (lambda p: torch.optim.Adam(p, lr=0.02), 300),
    "sgd": (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), 300),
    "lbfgs": (lambda p: torch.optim.LBFGS(p, lr=1.0, max_iter=20), 15),
    "clipup": (lambda p: evoopt.ClipUp(p, lr=0.02), 300),
}


@pytest.mark.parametrize("name", sorted(GRADIENT))
def test_gradient_optimizers_train_the_model(name):
    build, steps = GRADIENT[name]
    start, end = train(build, steps)
    assert end < 0.1 * start, (start, end)


@pytest.mark.parametrize("name", sorted(population_optimizers()))
def test_population_optimizers_train_the_model_with_the_same_loop(name):
    kwargs = ROWS[name].loop_kwargs
    cls = evoopt.OPTIMIZERS[name]
    start, end = train(lambda p: cls(p, seed=0, **kwargs), 150)
    assert end < 0.25 * start, (start, end)
