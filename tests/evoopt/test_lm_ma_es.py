"""LM-MA-ES: a float64 re-statement of Algorithm 1 (Loshchilov, Glasmachers, Beyer 2019)
driven by the same random numbers, defaults, the sampled width, convergence, resume, bad
input."""

import math

import pytest
import torch

import evoopt
from evoopt.algorithms.lm_ma_es import LMMAES, _transform_diag, lm_ma_es_constants

from ._helpers import assert_resumes_exactly, ellipsoid, rosenbrock, rotated_ellipsoid, roundtrip


def _algorithm_1(f, y, s, seed, generations, lr=1.0):
    """Algorithm 1 of the paper as printed, in float64, one member and one vector at a time;
    ``s`` the group's sigma (the paper's sigma is the learned factor, starting at 1).
    Yields (mean, sigma, p_s, M) after each generation."""
    n = y.numel()
    lam = 4 + math.floor(3 * math.log(n))
    mu = lam // 2
    w = [math.log(lam / 2 + 0.5) - math.log(i) for i in range(1, mu + 1)]
    w = [v / sum(w) for v in w]
    mu_w = 1 / sum(v * v for v in w)
    m = 4 + math.floor(3 * math.log(n))
    c_s = 2 * lam / n
    c_d = [1 / (1.5 ** (i - 1) * n) for i in range(1, m + 1)]
    c_c = [lam / (4.0 ** (i - 1) * n) for i in range(1, m + 1)]
    sigma, p, M = 1.0, torch.zeros(n, dtype=torch.float64), [torch.zeros(n, dtype=torch.float64)
                                                             for _ in range(m)]
    gen = torch.Generator().manual_seed(seed)
    for t in range(generations):
        Z = torch.randn(lam, n, generator=gen, dtype=torch.float64)
        z, d, fit = [], [], []
        for i in range(lam):
            z.append(Z[i])
            di = Z[i].clone()
            for j in range(min(t, m)):
                di = (1 - c_d[j]) * di + c_d[j] * M[j] * torch.dot(M[j], di)
            d.append(di)
            fit.append(float(f(y + sigma * s * di)))
        order = sorted(range(lam), key=lambda i: fit[i])
        y = y + lr * sigma * s * sum(w[k] * d[order[k]] for k in range(mu))
        zw = sum(w[k] * z[order[k]] for k in range(mu))
        p = (1 - c_s) * p + math.sqrt(mu_w * c_s * (2 - c_s)) * zw
        M = [(1 - c_c[i]) * M[i] + math.sqrt(mu_w * c_c[i] * (2 - c_c[i])) * zw
             for i in range(m)]
        sigma = sigma * math.exp(c_s / 2 * (float(torch.dot(p, p)) / n - 1))
        yield y, sigma, p, torch.stack(M)


def test_the_optimizer_equals_a_float64_restatement_of_algorithm_1_for_24_generations():
    # D = 40: lambda = m = 15, c_s = 0.75 (no rate is capped); 24 > m generations, so
    # every direction vector enters the sampling
    D, s, seed = 40, 0.3, 5
    x0 = torch.linspace(-1, 1, D, dtype=torch.float64)
    x = torch.nn.Parameter(x0.clone())
    opt = LMMAES([x], sigma=s, seed=seed)
    assert opt.popsize == opt.num_directions == 15
    for y, sigma, p, M in _algorithm_1(rotated_ellipsoid, x0.clone(), s, seed, 24):
        opt.step(lambda pop: rotated_ellipsoid(pop.flat))
        st = opt.state["population"]
        torch.testing.assert_close(st["mean"], y, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(st["p_s"], p, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(st["M"], M, rtol=1e-12, atol=1e-14)
        assert st["sigma"] == pytest.approx(sigma, rel=1e-12)
    assert torch.equal(x.detach(), opt.mean)


def test_constants_of_algorithm_1_and_the_cap_for_small_d():
    assert evoopt.get_optimizer("lm_ma_es") is LMMAES
    k = lm_ma_es_constants(1000, 24, 24)
    assert k.c_s == pytest.approx(2 * 24 / 1000)
    assert k.c_d[:3] == pytest.approx([1e-3, 1e-3 / 1.5, 1e-3 / 2.25])
    assert k.c_c[:3] == pytest.approx([0.024, 0.006, 0.0015])
    assert sum(k.weights) == pytest.approx(1.0) and k.weights[12:] == (0.0,) * 12
    small = lm_ma_es_constants(10, 10, 10)  # 2P > D: the paper's c_s = 2 would diverge
    assert small.c_s == 1.0 and small.c_c[0] == 1.0 and small.c_c[1] == 0.25
    x = torch.nn.Parameter(torch.zeros(10**4))
    opt = LMMAES([x])
    assert opt.num_directions == 4 + math.floor(3 * math.log(10**4)) == 31
    assert LMMAES([x], num_directions=3).num_directions == 3


def test_transform_diag_equals_the_explicit_product_of_the_maps():
    D, m = 9, 5
    M = torch.randn(m, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c_d = (0.3, 0.2, 0.5, 0.1, 0.25)
    for k in range(m + 1):
        T = torch.eye(D, dtype=torch.float64)
        for j in range(k):
            T = ((1 - c_d[j]) * torch.eye(D, dtype=torch.float64)
                 + c_d[j] * torch.outer(M[j], M[j])) @ T
        torch.testing.assert_close(_transform_diag(M, c_d, k), torch.diag(T @ T.T),
                                   rtol=1e-12, atol=1e-12)


def rotated_cigar(x):
    """One long axis in a fixed random basis: y_1**2 + 1e6 sum_{i>1} y_i**2, y = x Q."""
    d = x.shape[-1]
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0),
                                       dtype=torch.float64))
    y = x @ q.to(x.dtype)
    return y[..., 0] ** 2 + 1e6 * (y[..., 1:] ** 2).sum(-1)


def test_rotated_cigar_40d_is_learned():
    # not separable: the long axis must be found by the direction vectors. f(center) falls
    # from 4e7 to 0.31 .. 1.52 (seeds 0-2) in 20,000 evaluations; sep-CMA-ES reaches 1.8 .. 5.4
    x = torch.nn.Parameter(torch.ones(40, dtype=torch.float64))
    opt = LMMAES([x], sigma=1.0, seed=0)
    while opt.num_evals < 20_000 and not opt.stopped:
        opt.step(lambda pop: rotated_cigar(pop.flat))
    assert float(rotated_cigar(x.detach())) < 5.0


def test_rosenbrock_10d_within_20000_evals():
    # measured f(center) 4e-14 at 10,000 evaluations and 2.6e-27 at 20,000 (seed 0); seed 1
    # ends in the 10-D function's local minimum (f = 3.99), as CMA-ES runs sometimes do
    x = torch.nn.Parameter(torch.zeros(10, dtype=torch.float64))
    opt = LMMAES([x], sigma=1.0, seed=0)
    while opt.num_evals < 20_000 and not opt.stopped:
        opt.step(lambda pop: rosenbrock(pop.flat))
    assert float(rosenbrock(x.detach())) < 1e-10


def test_sphere_1000d_float32_progress():
    # D = 1,000 in float32, popsize = m = 24: f(center) from 1,000 to 9.3e-3 in 1,500
    # generations (seed 0; sep-CMA-ES: 0.28)
    x = torch.nn.Parameter(torch.ones(1000))
    opt = LMMAES([x], sigma=1.0, seed=0)
    for _ in range(1500):
        opt.step(lambda pop: (pop.flat**2).sum(-1))
    assert float((x.detach() ** 2).sum()) < 0.1
    assert opt.state["population"]["M"].shape == (24, 1000)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_resume_through_torch_save_past_m_generations(dtype):
    def fresh(seed):
        x = torch.nn.Parameter(torch.full((7,), 2.0, dtype=dtype))
        return x, LMMAES([x], sigma=0.5, seed=seed, num_directions=3)

    # 5 steps before the checkpoint: past m = 3, every vector is in use
    assert_resumes_exactly(fresh, lambda pop: ellipsoid(pop.flat))


def test_a_checkpoint_with_other_num_directions_is_refused():
    x = torch.nn.Parameter(torch.ones(7))
    a = LMMAES([x], num_directions=3, seed=0)
    a.step(lambda pop: ellipsoid(pop.flat))
    b = LMMAES([torch.nn.Parameter(torch.ones(7))], num_directions=4)
    with pytest.raises(ValueError, match="saved num_directions=3, this optimizer has "
                                         "num_directions=4"):
        b.load_state_dict(roundtrip(a.state_dict()))
    sd = roundtrip(a.state_dict())
    sd["state"]["population"]["M"] = sd["state"]["population"]["M"][:2]
    c = LMMAES([torch.nn.Parameter(torch.ones(7))], num_directions=3)
    with pytest.raises(ValueError, match=r"saved M has shape .*2, 7.*expected \(3, 7\)"):
        c.load_state_dict(sd)


BAD = [
    (dict(lr=0.0), "Invalid lr: 0.0"),
    (dict(lr=-1.0), "Invalid lr: -1.0"),
    (dict(sigma=0.0), "Invalid sigma: 0.0"),
    (dict(sigma=math.nan), "Invalid sigma: nan"),
    (dict(popsize=1), "Invalid popsize: 1 .*>= 2"),
    (dict(num_directions=0), "Invalid num_directions: 0 .*>= 1"),
    (dict(num_directions=2.0), "Invalid num_directions: 2.0"),
    (dict(num_directions=True), "Invalid num_directions: True"),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LMMAES([torch.nn.Parameter(torch.zeros(4))], **kwargs)


@pytest.mark.parametrize("key,value,match", [
    ("num_updates", -1, "saved num_updates -1 is not a non-negative integer"),
    ("sigma", 0.0, "saved sigma 0.0 is not a finite number > 0"),
])
def test_a_corrupt_checkpoint_is_refused(key, value, match):
    a = LMMAES([torch.nn.Parameter(torch.ones(7))], num_directions=3, seed=0)
    a.step(lambda pop: ellipsoid(pop.flat))
    sd = roundtrip(a.state_dict())
    sd["state"]["population"][key] = value
    with pytest.raises(ValueError, match=match):
        LMMAES([torch.nn.Parameter(torch.ones(7))], num_directions=3).load_state_dict(sd)


def test_an_exact_plateau_does_not_count_as_an_update():
    x = torch.nn.Parameter(torch.ones(6, dtype=torch.float64))
    opt = LMMAES([x], sigma=0.5, seed=0, stop=False)  # (the defaults stop on a plateau)
    width = opt.current_sigma
    for _ in range(5):
        opt.step(lambda pop: torch.ones(len(pop), dtype=torch.float64))
    st = opt.state["population"]
    assert st["num_updates"] == 0 and opt.generation == 5 and opt.current_sigma == width
    opt.step(lambda pop: ellipsoid(pop.flat))
    assert st["num_updates"] == 1


def test_a_diverging_small_problem_stops_on_tolupsigma_instead_of_overflowing():
    # D = 2 < 2 P: the paper's rates are capped at 1 and the step size random-walks; on a
    # linear loss it grows until the members overflow (inf losses: bbob's f5 did). The
    # termination criteria end the run first.
    x = torch.zeros(2, dtype=torch.float64)
    opt = LMMAES([x], sigma=1.0, seed=0)
    with pytest.warns(RuntimeWarning, match=r"LMMAES stopped at generation \d+: CMA-ES's "
                      r"termination criteria \{'tolupsigma': 1e\+20\}"):
        for _ in range(20_000):
            opt.step(lambda pop: pop.flat.sum(-1))
            if opt.stopped:
                break
    assert opt.stopped == {"tolupsigma": 1e20} and bool(torch.isfinite(x).all())
