"""xNES: defaults, convergence, a float64 reference generation, float64 state, resume,
errors, schedules."""

import io
import math

import pytest
import torch

import evoopt
from evoopt.algorithms.xnes import XNES, xnes_defaults

from ._helpers import f_mean
from ._helpers import rosenbrock_pop as rosenbrock
from ._helpers import sphere_pop as sphere


def make(x0=3.0, D=10, dtype=torch.float64, **kw):
    p = torch.nn.Parameter(torch.full((D,), x0, dtype=dtype))
    return p, XNES([p], **kw)


def test_registered_and_defaults_from_table_1():
    assert evoopt.get_optimizer("xnes") is XNES
    _, opt = make(D=10)
    assert opt.popsize == 10
    rate = 3 * (3 + math.log(10)) / (5 * 10 * math.sqrt(10))
    assert xnes_defaults(10)["sigma_lr"] == pytest.approx(rate)
    assert xnes_defaults(10)["b_lr"] == pytest.approx(rate)


@pytest.mark.parametrize("seed", [0, 1])
def test_sphere_10d_reaches_1e8_within_8000_evals(seed):
    # measured: 5920-6320 evaluations (seeds 0-4; popsize 10, sigma 1, start 3 * ones)
    p, opt = make(sigma=1.0, seed=seed)
    while opt.num_evals < 8000 and not opt.best_loss < 1e-8:
        opt.step(sphere)
    assert opt.best_loss < 1e-8
    assert f_mean(opt, sphere) < 1e-7


def test_rosenbrock_10d_reaches_1e8_within_15000_evals():
    # measured: 8840-11670 evaluations (seeds 0-4; popsize 10, sigma 0.5, start 0)
    p, opt = make(x0=0.0, sigma=0.5, seed=0)
    while opt.num_evals < 15000 and not opt.best_loss < 1e-8:
        opt.step(rosenbrock)
    assert opt.best_loss < 1e-8
    assert f_mean(opt, rosenbrock) < 1e-6
    torch.testing.assert_close(opt.mean, torch.ones(10, dtype=torch.float64), atol=1e-3, rtol=0)


def _reference_generation(mean, sigma, B, fn, g, P, lr, eta_sigma, eta_B):
    """JMLR 2014 Algorithm 5, written out in float64 with the utilities of eq. 11; draws
    the noise from the generator ``g``."""
    D = mean.numel()
    s = torch.randn(P, D, generator=g, dtype=torch.float64)
    z = torch.stack([mean + sigma * B @ s[k] for k in range(P)])
    f = fn(z)
    order = sorted(range(P), key=lambda i: float(f[i]))
    raw = [max(0.0, math.log(P / 2 + 1) - math.log(k)) for k in range(1, P + 1)]
    u = [0.0] * P
    for k, i in enumerate(order):
        u[i] = raw[k] / sum(raw) - 1.0 / P
    eye = torch.eye(D, dtype=torch.float64)
    G_delta = sum(u[k] * s[k] for k in range(P))
    G_M = sum(u[k] * (torch.outer(s[k], s[k]) - eye) for k in range(P))
    G_sigma = torch.trace(G_M) / D
    G_B = G_M - G_sigma * eye
    new_mean = mean + lr * sigma * B @ G_delta
    new_sigma = sigma * math.exp(eta_sigma / 2 * float(G_sigma))
    new_B = B @ torch.linalg.matrix_exp(eta_B / 2 * G_B)
    return z, new_mean, new_sigma, new_B


def test_three_generations_equal_float64_reference():
    D, P, seed = 5, 9, 77
    x0 = torch.linspace(-1, 1, D, dtype=torch.float64)
    p = torch.nn.Parameter(x0.clone())
    opt = XNES([p], lr=0.9, sigma=0.4, sigma_lr=0.3, b_lr=0.2, popsize=P, seed=seed)
    H = torch.tensor(
        [
            [2.0, 0.5, 0, 0, 0],
            [0.5, 1, 0, 0, 0],
            [0, 0, 3, 0, 0],
            [0, 0, 0, 1, 0.9],
            [0, 0, 0, 0.9, 1],
        ],
        dtype=torch.float64,
    )

    def fn(x):
        return ((x @ H) * x).sum(-1)

    g = torch.Generator().manual_seed(seed)  # the same noise stream
    mean, sigma, B = x0.clone(), 0.4, torch.eye(D, dtype=torch.float64)
    for _ in range(3):
        pop = opt.ask()
        opt.tell(fn(pop.flat))
        z, mean, sigma, B = _reference_generation(mean, sigma, B, fn, g, P, 0.9, 0.3, 0.2)
        torch.testing.assert_close(pop.flat, z, rtol=1e-13, atol=1e-14)
    st = opt.state["population"]
    torch.testing.assert_close(opt.mean, mean, rtol=1e-12, atol=1e-13)
    assert float(st["sigma"]) == pytest.approx(sigma, rel=1e-12)
    torch.testing.assert_close(st["B"], B, rtol=1e-12, atol=1e-13)
    assert torch.linalg.det(st["B"]).item() == pytest.approx(1.0, abs=1e-12)  # tr(G_B) = 0
    assert not torch.allclose(B, torch.diag(torch.diagonal(B)))  # B learned correlations


def test_float32_parameters_keep_float64_covariance_through_a_checkpoint():
    p, opt = make(dtype=torch.float32, sigma=0.5, seed=3)
    for _ in range(3):
        opt.step(rosenbrock)
    st = opt.state["population"]
    assert st["B"].dtype == torch.float64 and st["sigma"].dtype == torch.float64
    assert st["mean"].dtype == torch.float32 and p.dtype == torch.float32
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    _, other = make(dtype=torch.float32, sigma=0.5, seed=4)
    other.load_state_dict(torch.load(buf, weights_only=True))
    st2 = other.state["population"]
    assert st2["B"].dtype == torch.float64 and st2["sigma"].dtype == torch.float64
    assert torch.equal(st2["B"], st["B"])
    for _ in range(3):
        opt.step(rosenbrock)
        other.step(rosenbrock)
    assert torch.equal(opt.mean, other.mean) and torch.equal(opt.state["population"]["B"], st2["B"])


def test_maximize_equals_minimizing_the_negation_exactly():
    _, a = make(sigma=0.5, seed=5, maximize=True)
    _, b = make(sigma=0.5, seed=5)
    for _ in range(20):
        a.step(lambda pop: -rosenbrock(pop))
        b.step(rosenbrock)
    assert torch.equal(a.mean, b.mean)
    assert torch.equal(a.state["population"]["B"], b.state["population"]["B"])
    assert a.best_loss == -b.best_loss


def test_exact_resume_through_torch_save():
    _, full = make(sigma=0.5, seed=9)
    _, first = make(sigma=0.5, seed=9)
    for _ in range(5):
        full.step(rosenbrock)
        first.step(rosenbrock)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    p, resumed = make(x0=-7.0, sigma=0.5, seed=1)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(p.detach(), full.mean)
    for _ in range(5):
        full.step(rosenbrock)
        resumed.step(rosenbrock)
    assert torch.equal(full.mean, resumed.mean)
    for key in ("sigma", "B", "sigma_group"):
        assert torch.equal(full.state["population"][key], resumed.state["population"][key])


def test_too_many_parameters_is_refused_with_the_limit_and_alternatives():
    p = torch.nn.Parameter(torch.zeros(5001))
    with pytest.raises(ValueError, match=r"5001 \(expected at most XNES.max_params=5000.*SNES"):
        XNES([p])
    small = torch.nn.Parameter(torch.zeros(4000))
    opt = XNES([small])
    with pytest.raises(ValueError, match=r"5001 \(expected at most XNES.max_params=5000"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1001))]})


BAD = [
    (dict(lr=-1.0), r"Invalid lr: -1.0 \(expected a finite number > 0\)"),
    (dict(lr=0.0), r"Invalid lr: 0.0 \(expected a finite number > 0\)"),
    (dict(sigma=0.0), r"Invalid sigma: 0.0 \(expected a finite number > 0\)"),
    (dict(sigma=math.nan), r"Invalid sigma: nan"),
    (dict(sigma_lr=-0.1), r"Invalid sigma_lr: -0.1"),
    (dict(b_lr=math.inf), r"Invalid b_lr: inf"),
    (dict(popsize=1), r"Invalid popsize: 1 \(expected an integer >= 2\)"),
    (dict(popsize="8"), r"Invalid popsize: '8'"),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_matrix_rates_must_agree_between_groups():
    p1 = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    p2 = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = XNES([{"params": [p1]}, {"params": [p2], "b_lr": 0.5}], seed=0)
    with pytest.raises(ValueError, match=r"Invalid b_lr: .* differ between param groups"):
        opt.step(sphere)


def test_lr_schedule_takes_effect():
    _, opt = make(sigma=0.5, seed=0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0 if epoch < 3 else 0.0)
    for _ in range(3):
        opt.step(sphere)
        sched.step()
    before = opt.mean.clone()
    sigma_before = opt.state["population"]["sigma"].clone()
    opt.step(sphere)
    assert torch.equal(opt.mean, before)
    assert not torch.equal(opt.state["population"]["sigma"], sigma_before)


def test_changing_group_sigma_rescales_rows_of_A():
    p1 = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    p2 = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = XNES([{"params": [p1]}, {"params": [p2]}], sigma=0.2, seed=0)
    opt.ask()  # the state is built lazily
    st = opt.state["population"]
    assert float(st["sigma"]) == 0.2 and torch.equal(st["B"], torch.eye(5, dtype=torch.float64))
    for _ in range(3):
        opt.step(sphere)
    A = st["sigma"] * st["B"]
    opt.param_groups[1]["sigma"] = 0.05  # quarter the second group's rows
    pop = opt.ask()
    st = opt.state["population"]
    scale = torch.tensor([1, 1, 1, 0.25, 0.25], dtype=torch.float64)
    torch.testing.assert_close(st["sigma"] * st["B"], scale[:, None] * A, rtol=1e-13, atol=1e-15)
    assert torch.linalg.det(st["B"]).item() == pytest.approx(1.0, abs=1e-12)
    opt.tell(sphere(pop))
    sigma_before = st["sigma"].clone()
    for g in opt.param_groups:  # uniform change: sigma only
        g["sigma"] = g["sigma"] * 2
    B_before = opt.state["population"]["B"].clone()
    opt.ask()
    assert torch.equal(opt.state["population"]["B"], B_before)
    assert float(opt.state["population"]["sigma"]) == float(sigma_before) * 2


def test_per_group_initial_sigma_factors_into_sigma_and_B():
    p1 = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    p2 = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = XNES([{"params": [p1]}, {"params": [p2], "sigma": 4.0}], sigma=1.0, seed=0)
    opt.ask()
    st = opt.state["population"]
    assert float(st["sigma"]) == pytest.approx(2.0)
    torch.testing.assert_close(
        st["B"], torch.diag(torch.tensor([0.5, 0.5, 2.0, 2.0], dtype=torch.float64))
    )


def test_a_refused_param_group_is_not_added():
    """Regression: the group was validated after it had been added, so add_param_group
    raised but left the bad group in place and every later step raised too."""
    x = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = evoopt.XNES([x], popsize=6, seed=0)
    with pytest.raises(ValueError, match=r"Invalid sigma: -1.0"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))],
                             "sigma": -1.0})
    assert len(opt.param_groups) == 1 and opt.num_params == 3
    opt.step(lambda pop: (pop.flat**2).sum(1))
    assert opt.generation == 1


def test_a_param_group_beyond_max_params_is_taken_back_out(monkeypatch):
    monkeypatch.setattr(evoopt.XNES, "max_params", 4)
    x = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = evoopt.XNES([x], popsize=6, seed=0)
    with pytest.raises(ValueError, match=r"Invalid number of parameters for XNES: 5"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))]})
    assert len(opt.param_groups) == 1 and opt.num_params == 3
    opt.step(lambda pop: (pop.flat**2).sum(1))
    assert opt.generation == 1


def test_a_rate_that_differs_between_groups_at_tell_changes_nothing():
    """Regression: the rates were read after the mean had moved, so a tell that raised
    (sigma_lr set differently in two groups between ask and tell) left a moved mean, and
    the retried tell moved it twice."""
    a = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    b = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = evoopt.XNES([{"params": [a]}, {"params": [b]}], popsize=6, seed=0)
    ref = evoopt.XNES([{"params": [a.detach().clone().requires_grad_()]},
                       {"params": [b.detach().clone().requires_grad_()]}], popsize=6, seed=0)
    pop, pop_ref = opt.ask(), ref.ask()
    losses = (pop.flat**2).sum(1)
    opt.param_groups[1]["sigma_lr"] = 0.5
    with pytest.raises(ValueError, match=r"Invalid sigma_lr: .* differ between param groups"):
        opt.tell(losses)
    opt.param_groups[1]["sigma_lr"] = None
    opt.tell(losses)
    ref.tell((pop_ref.flat**2).sum(1))
    assert torch.equal(opt.mean, ref.mean)
