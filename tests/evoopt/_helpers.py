"""Helpers shared by the optimizer tests: benchmark functions on tensors [..., D] and,
with the ``_pop`` suffix, as population objectives (``pop -> [P]``); a checkpoint round
trip through ``torch.load(weights_only=True)``; plain reference fitness shaping."""

import io
import math

import torch

import evoopt


def sphere(x):
    return (x**2).sum(-1)


def rosenbrock(x):
    return (100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2).sum(-1)


def rastrigin(x):
    return 10 * x.shape[-1] + (x**2 - 10 * (2 * math.pi * x).cos()).sum(-1)


def ellipsoid(x):
    """sum_i 10**(6 (i - 1) / (D - 1)) x_i**2 (separable, condition 1e6), rows of [..., D]."""
    d = x.shape[-1]
    scale = 10.0 ** (6 * torch.arange(d, dtype=torch.float64) / (d - 1))
    return (scale.to(x.dtype) * x**2).sum(-1)


def rotated_ellipsoid(x):
    """The ellipsoid in a fixed rotated basis: not separable, so the directions must learn."""
    d = x.shape[-1]
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0),
                                       dtype=torch.float64))
    return ellipsoid(x @ q.to(x.dtype))


def sphere_pop(pop):
    return sphere(pop.flat)


def rosenbrock_pop(pop):
    return rosenbrock(pop.flat)


def f_mean(opt, f):
    """A population objective ``f`` at the optimizer's center."""
    return float(f(evoopt.Population(opt.mean[None], opt.layout))[0])


def roundtrip(obj):
    """``obj`` through ``torch.save`` and ``torch.load(weights_only=True)``, as a checkpoint."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def centered_rank_reference(u):
    """Plain reference: rank / (P - 1) - 0.5, tied values sharing their average rank."""
    vals = [float(v) for v in u]
    r = torch.empty(len(u), dtype=torch.float64)
    for i, v in enumerate(vals):
        below = sum(w < v for w in vals)
        same = sum(w == v for w in vals)
        r[i] = (below + (same - 1) / 2) / (len(u) - 1) - 0.5
    return r


def first_two(pop):
    """A behaviour descriptor: each member's first two coordinates ([P, 2])."""
    return pop.flat[:, :2]


#: constructor arguments a registered algorithm cannot do without, for tests that build
#: every one of them (MAP-Elites needs its grid and a descriptor)
REQUIRED_KWARGS = {"map_elites": dict(sigma=0.5, cells=4, descriptor_bounds=[(-2.0, 2.0)] * 2,
                                      descriptor=first_two)}


def assert_resumes_exactly(fresh, f, before: int = 5, after: int = 5) -> None:
    """``fresh(seed) -> (x, opt)``: a run checkpointed after ``before`` steps of the
    population objective ``f`` (through ``torch.save`` / ``weights_only`` load) and resumed
    in an optimizer built with another seed takes the same next ``after`` steps, bit for bit."""
    x, full = fresh(9)
    for _ in range(before):
        full.step(f)
    ckpt = roundtrip(full.state_dict())
    expected = [float(full.step(f)) for _ in range(after)]
    y, resumed = fresh(1)
    resumed.load_state_dict(ckpt)
    assert [float(resumed.step(f)) for _ in range(after)] == expected
    assert torch.equal(x.detach(), y.detach())
