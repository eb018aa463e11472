"""ARS: defaults, convergence, a float64 reference generation (V1 and V1-t), raw-reward
invariances, resume, errors, schedules."""

import io
import math

import pytest
import torch

import evoopt
from evoopt.algorithms.ars import ARS

from ._helpers import f_mean
from ._helpers import rosenbrock_pop as rosenbrock
from ._helpers import sphere_pop as sphere


def make(x0=1.0, D=10, dtype=torch.float64, **kw):
    p = torch.nn.Parameter(torch.full((D,), x0, dtype=dtype))
    return p, ARS([p], **kw)


def test_registered_and_defaults_of_the_authors_code():
    assert evoopt.get_optimizer("ars") is ARS
    _, opt = make()
    assert (opt.popsize, opt.num_directions, opt.num_top) == (16, 8, 8)
    assert (opt.param_groups[0]["lr"], opt.param_groups[0]["sigma"]) == (0.02, 0.03)
    assert ARS.mirrored


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sphere_10d_center_reaches_1e8_within_3200_evals(seed):
    # defaults (N = b = 8, lr 0.02, sigma 0.03), start at ones (f = 10). On a quadratic the
    # antithetic difference is exact and sigma_R ~ sigma^2 near the optimum, so V1 converges
    # linearly: measured f(center) 7e-7 .. 8e-5 after 1600 evals, < 1e-16 after 3200.
    _, opt = make(seed=seed)
    while opt.num_evals < 3200:
        opt.step(sphere)
    assert f_mean(opt, sphere) < 1e-8


def test_top_directions_stall_near_the_optimum_on_sphere():
    # V1-t (b = 4 of 8) keeps the directions with the best max(r+, r-): a biased estimate;
    # measured f(center) between 8e-4 and 4e-3 from 1600 evals on.
    _, opt = make(seed=0, num_top=4)
    while opt.num_evals < 8000:
        opt.step(sphere)
    assert 1e-5 < f_mean(opt, sphere) < 1e-2


def test_rosenbrock_10d_below_1_within_48000_evals():
    # defaults, start 0 (f = 9): measured best member 0.52 .. 0.55 (seeds 0-3)
    _, opt = make(x0=0.0, seed=0)
    while opt.num_evals < 48_000:
        opt.step(rosenbrock)
    assert f_mean(opt, rosenbrock) < 1.0


def _reference_generation(mean, g, N, b, lr, nu, reward):
    """Mania et al. 2018, Algorithm 1 (V1 / V1-t), in float64 with plain Python loops."""
    D = mean.numel()
    deltas = torch.randn(N, D, generator=g, dtype=torch.float64)
    r_plus = [float(reward(mean + nu * deltas[k])) for k in range(N)]
    r_minus = [float(reward(mean - nu * deltas[k])) for k in range(N)]
    order = sorted(range(N), key=lambda k: -max(r_plus[k], r_minus[k]))[:b]
    used = [r_plus[k] for k in order] + [r_minus[k] for k in order]
    m = sum(used) / len(used)
    sigma_R = math.sqrt(sum((r - m) ** 2 for r in used) / len(used))
    step = sum((r_plus[k] - r_minus[k]) * deltas[k] for k in order)
    return deltas, mean + lr / (b * sigma_R) * step


@pytest.mark.parametrize("num_top", [6, 3])
def test_three_generations_equal_float64_reference(num_top):
    D, N, seed = 5, 6, 21
    x0 = torch.linspace(-1, 1, D, dtype=torch.float64)
    p = torch.nn.Parameter(x0.clone())
    opt = ARS([p], lr=0.05, sigma=0.1, popsize=2 * N, num_top=num_top, seed=seed)
    w = torch.arange(1.0, D + 1, dtype=torch.float64)

    def loss(x):
        return (w * (x - 0.3) ** 2).sum(-1) + torch.sin(3 * x).sum(-1)

    g = torch.Generator().manual_seed(seed)
    mean = x0.clone()
    for _ in range(3):
        pop = opt.ask()
        opt.tell(loss(pop.flat))
        deltas, new_mean = _reference_generation(mean, g, N, num_top, 0.05, 0.1, lambda x: -loss(x))
        torch.testing.assert_close(pop.flat[:N], mean + 0.1 * deltas, rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(pop.flat[N:], mean - 0.1 * deltas, rtol=1e-13, atol=1e-15)
        mean = new_mean
    torch.testing.assert_close(opt.mean, mean, rtol=1e-13, atol=1e-14)
    assert torch.equal(p.detach(), opt.mean)


def test_step_is_invariant_to_reward_scale_and_offset_as_sigma_R_divides_it():
    def run(transform):
        _, opt = make(seed=3, num_top=5)
        for _ in range(5):
            opt.step(lambda pop: transform(rosenbrock(pop)))
        return opt.mean

    base = run(lambda f: f)
    torch.testing.assert_close(run(lambda f: 1000.0 * f + 7.0), base, rtol=1e-11, atol=1e-12)


def test_all_equal_rewards_give_a_zero_step():
    p, opt = make(seed=0)
    opt.step(lambda pop: torch.ones(len(pop), dtype=torch.float64))
    assert torch.equal(opt.mean, torch.ones(10, dtype=torch.float64))


def test_maximize_rewards_equals_minimizing_the_negation_exactly():
    _, a = make(seed=5, maximize=True, num_top=3)
    _, b = make(seed=5, num_top=3)
    for _ in range(20):
        a.step(lambda pop: -rosenbrock(pop))
        b.step(rosenbrock)
    assert torch.equal(a.mean, b.mean)
    assert a.best_loss == -b.best_loss


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_resume_through_torch_save(dtype):
    _, full = make(dtype=dtype, seed=9, num_top=4)
    _, first = make(dtype=dtype, seed=9, num_top=4)
    for _ in range(5):
        full.step(rosenbrock)
        first.step(rosenbrock)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    p, resumed = make(x0=-7.0, dtype=dtype, seed=1, num_top=4)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(p.detach(), full.mean)
    for _ in range(5):
        full.step(rosenbrock)
        resumed.step(rosenbrock)
    assert torch.equal(full.mean, resumed.mean)


def test_load_refuses_another_num_top():
    _, a = make(seed=0, num_top=4)
    a.step(sphere)
    _, b = make(seed=0)
    with pytest.raises(ValueError, match=r"saved num_top=4, this optimizer has num_top=8"):
        b.load_state_dict(a.state_dict())


BAD = [
    (dict(lr=0.0), r"Invalid lr: 0.0 \(expected a finite number > 0\)"),
    (dict(lr=-0.02), r"Invalid lr: -0.02"),
    (dict(sigma=0.0), r"Invalid sigma: 0.0 \(expected a finite number > 0\)"),
    (dict(sigma=math.inf), r"Invalid sigma: inf"),
    (dict(popsize=7), r"Invalid popsize: 7 \(expected an even integer, ARS evaluates"),
    (dict(popsize=0), r"Invalid popsize: 0 \(expected an integer >= 2\)"),
    (
        dict(num_top=9),
        r"Invalid num_top: 9 \(expected at most the number of directions popsize / 2 = 8\)",
    ),
    (dict(popsize=4, num_top=3), r"Invalid num_top: 3 .* = 2\)"),
    (dict(num_top=0), r"Invalid num_top: 0 \(expected an integer >= 1\)"),
    (dict(num_top=2.0), r"Invalid num_top: 2.0"),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_lr_and_sigma_schedules_take_effect():
    _, a = make(seed=0)
    _, b = make(seed=0)
    sched = torch.optim.lr_scheduler.StepLR(b, step_size=1, gamma=0.5)
    a.step(sphere)
    b.step(sphere)
    sched.step()
    assert b.param_groups[0]["lr"] == 0.01
    b.param_groups[0]["sigma"] = 0.015  # sigma is read every generation
    pa, pb = a.ask(), b.ask()
    assert torch.equal(a.mean, b.mean)
    torch.testing.assert_close(pb.flat - b.mean, 0.5 * (pa.flat - a.mean), rtol=1e-12, atol=1e-15)
    a.tell(sphere(pa))
    b.tell(sphere(pb))
    assert not torch.equal(a.mean, b.mean)


def test_lr_schedule_halves_the_step_exactly():
    _, a = make(seed=0)
    _, c = make(seed=0)
    sched = torch.optim.lr_scheduler.StepLR(c, step_size=1, gamma=0.5)
    a.step(rosenbrock)
    c.step(rosenbrock)
    sched.step()
    m0 = a.mean.clone()
    a.step(rosenbrock)
    c.step(rosenbrock)
    torch.testing.assert_close(c.mean - m0, 0.5 * (a.mean - m0), rtol=1e-12, atol=1e-15)


def test_per_group_lr_and_sigma():
    p1 = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    p2 = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = ARS([{"params": [p1]}, {"params": [p2], "lr": 1e-9, "sigma": 1e-6}], seed=0)
    pop = opt.ask()
    spread = (pop.flat - opt.mean).abs().amax(0)
    assert spread[:3].min() > 1e-3 and spread[3:].max() < 1e-5
    opt.tell(sphere(pop))
    assert (opt.mean[3:] - 1).abs().max() < 1e-7 and (opt.mean[:3] - 1).abs().min() > 1e-4


def test_a_refused_param_group_is_not_added():
    """Regression: the group was validated after it had been added, so add_param_group
    raised but left the bad group in place and every later step raised too."""
    x = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = evoopt.ARS([x], popsize=6, seed=0)
    with pytest.raises(ValueError, match=r"Invalid sigma: -1.0"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))],
                             "sigma": -1.0})
    assert len(opt.param_groups) == 1 and opt.num_params == 3
    opt.step(lambda pop: (pop.flat**2).sum(1))
    assert opt.generation == 1
