"""sep-CMA-ES: pycma's CMA_diagonal generation by generation, a float64 re-statement of the
tutorial's update, defaults, convergence, resume, bad input."""

import math

import cma
import numpy as np
import pytest
import torch
from cma.utilities.math import Mh

import evoopt
from evoopt.algorithms.sep_cma import SepCMAConstants, SepCMAES, sep_cma_constants, sep_cma_update
from evoopt.shaping import by_rank

from ._helpers import assert_resumes_exactly, ellipsoid, roundtrip


def _pycma_diagonal(x0, sigma0, seed):
    """pycma's diagonal CMA-ES with positive weights only (CMA_active=False), sampling from
    a private numpy generator, no files."""
    rng = np.random.default_rng(seed)
    opts = {"CMA_diagonal": True, "CMA_active": False, "verbose": -9, "verb_log": 0,
            "randn": lambda *shape: rng.standard_normal(shape)}
    return cma.CMAEvolutionStrategy(np.asarray(x0, dtype=float), sigma0, opts)


def _pycma_constants(es) -> SepCMAConstants:
    """pycma's own strategy parameters, with its covariance rates times ln 2: pycma multiplies
    the variances by exp(ln 2 * Delta) (DiagonalDecoding.update), sep-CMA by 1 + Delta; its
    step size uses the exact E|N(0, I)| (Mh.chiN), the tutorial an approximation."""
    sp = es.sp
    return SepCMAConstants(
        weights=tuple(max(0.0, float(w)) for w in sp.weights), mu_eff=sp.weights.mueff,
        c_s=es.adapt_sigma.cs, d_s=es.adapt_sigma.damps, c_c=sp.cc_sep,
        c_1=math.log(2) * sp.c1_sep, c_mu=math.log(2) * sp.cmu_sep, chi_n=Mh.chiN(es.N),
    )


def _t(a):
    return torch.tensor(np.asarray(a, dtype=float), dtype=torch.float64)


def test_one_update_equals_pycma_diagonal_from_the_same_state_and_samples():
    """For 30 generations of pycma's CMA_diagonal on an 8-D ellipsoid, our update from
    pycma's state before its tell, with pycma's samples and constants, gives pycma's state
    after it: mean, p_s, p_c and sigma to 1e-12; the diagonal C to within Delta**2 in log
    (pycma's update is exp(ln2 Delta), ours 1 + Delta with ln 2 in the rates)."""
    D = 8
    es = _pycma_diagonal(np.linspace(-1, 2, D), 0.5, seed=3)
    k = _pycma_constants(es)
    for g in range(30):
        scale0 = es.sigma_vec.scaling.copy()
        st = {"mean": _t(es.mean), "sigma": float(es.sigma), "C": _t(scale0**2),
              "p_c": _t(es.pc * scale0), "p_s": _t(es.adapt_sigma.ps), "generation": g}
        X = np.asarray(es.ask())
        f = ellipsoid(_t(X))
        z = (_t(X) - st["mean"]) / (st["sigma"] * _t(scale0))
        es.tell(list(X), f.numpy().tolist())
        w = by_rank(f, torch.tensor(k.weights, dtype=torch.float64))
        sep_cma_update(st, w, z, k, lr=1.0, s=1.0)
        # both hsig formulas (pycma's squared one, the tutorial's) say 1 here
        ps2 = float(st["p_s"].square().sum()) / (1 - (1 - k.c_s) ** (2 * (g + 1)))
        assert ps2 / D - 1 < 1 + 4 / (D + 1)
        torch.testing.assert_close(st["mean"], _t(es.mean), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(st["p_s"], _t(es.adapt_sigma.ps), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(st["p_c"], _t(es.pc * scale0), rtol=1e-12, atol=1e-14)
        assert st["sigma"] == pytest.approx(es.sigma, rel=1e-12)
        pc_z = _t(es.pc)  # pycma's path is in z units
        delta = k.c_1 * (pc_z**2 - 1) + k.c_mu * (w @ (z**2 - 1))
        log_ratio = torch.log(st["C"]) - torch.log(_t(es.sigma_vec.scaling**2))
        assert torch.all(log_ratio.abs() <= delta**2 + 1e-14), (g, log_ratio, delta)


def _reference_generation(st, f, z, D, P, lr, s):
    """The tutorial (Hansen 2016, eqs. 41-47, 49-58, Table 1) with diagonal C and the sep-CMA
    rates (Ros & Hansen 2008), written out per coordinate in float64 Python; ``s`` is the
    group's sigma, the scale of the mean's step."""
    mu = P // 2
    raw = [math.log((P + 1) / 2) - math.log(i + 1) for i in range(mu)]
    w = [r / sum(raw) for r in raw]
    mueff = 1 / sum(v * v for v in w)
    cs = (mueff + 2) / (D + mueff + 5)
    ds = 1 + 2 * max(0, math.sqrt((mueff - 1) / (D + 1)) - 1) + cs
    cc = (4 + mueff / D) / (D + 4 + 2 * mueff / D)
    c1 = 2 / ((D + 1.3) ** 2 + mueff) * (D + 2) / 3
    cmu = min(1 - c1, 2 * (mueff - 2 + 1 / mueff) / ((D + 2) ** 2 + mueff) * (D + 2) / 3)
    chi = math.sqrt(D) * (1 - 1 / (4 * D) + 1 / (21 * D * D))
    order = sorted(range(P), key=lambda i: f[i])[:mu]
    m, sig, C, pc, ps = ([float(v) for v in st[key]] if key != "sigma" else st[key]
                         for key in ("mean", "sigma", "C", "p_c", "p_s"))
    zw = [sum(w[j] * float(z[i, d]) for j, i in enumerate(order)) for d in range(D)]
    yw = [math.sqrt(C[d]) * zw[d] for d in range(D)]
    m = [m[d] + lr * sig * s * yw[d] for d in range(D)]
    ps = [(1 - cs) * ps[d] + math.sqrt(cs * (2 - cs) * mueff) * zw[d] for d in range(D)]
    norm = math.sqrt(sum(v * v for v in ps))
    g = st["generation"] + 1
    h = norm / math.sqrt(1 - (1 - cs) ** (2 * g)) < (1.4 + 2 / (D + 1)) * chi
    pc = [(1 - cc) * pc[d] + h * math.sqrt(cc * (2 - cc) * mueff) * yw[d] for d in range(D)]
    dh = (1 - h) * cc * (2 - cc)
    C = [(1 - c1 - cmu + c1 * dh) * C[d] + c1 * pc[d] ** 2
         + cmu * sum(w[j] * C[d] * float(z[i, d]) ** 2 for j, i in enumerate(order))
         for d in range(D)]
    sig = sig * math.exp(cs / ds * (norm / chi - 1))
    return {"mean": m, "sigma": sig, "C": C, "p_c": pc, "p_s": ps}


def test_the_optimizer_equals_a_float64_restatement_of_the_tutorial_for_12_generations():
    D, P, lr, sigma0 = 6, 9, 0.8, 0.4  # odd P: the weights use ln((P + 1) / 2)
    x = torch.nn.Parameter(torch.linspace(-1, 2, D, dtype=torch.float64))
    opt = SepCMAES([x], lr=lr, sigma=sigma0, popsize=P, seed=11)
    st = {"mean": x.detach().clone(), "sigma": 1.0, "C": torch.ones(D, dtype=torch.float64),
          "p_c": torch.zeros(D, dtype=torch.float64), "p_s": torch.zeros(D, dtype=torch.float64)}
    gen = torch.Generator().manual_seed(11)
    for g in range(12):
        z = torch.randn(P, D, generator=gen, dtype=torch.float64)
        pop = opt.ask()
        expected_rows = st["mean"] + st["sigma"] * sigma0 * st["C"].sqrt() * z
        torch.testing.assert_close(pop.flat, expected_rows, rtol=1e-13, atol=1e-15)
        f = ellipsoid(pop.flat)
        opt.tell(f)
        ref = _reference_generation({**st, "generation": g}, f.tolist(), z, D, P, lr, sigma0)
        st = {key: torch.tensor(v, dtype=torch.float64) if key != "sigma" else v
              for key, v in ref.items()}
        got = opt.state["population"]
        for key in ("mean", "C", "p_c", "p_s"):
            torch.testing.assert_close(got[key], st[key], rtol=1e-12, atol=1e-14, msg=key)
        assert got["sigma"] == pytest.approx(st["sigma"], rel=1e-12)


def test_registered_and_defaults_with_the_sep_correction():
    assert evoopt.get_optimizer("sep_cma") is SepCMAES
    x = torch.nn.Parameter(torch.zeros(10))
    assert SepCMAES([x]).popsize == 4 + math.floor(3 * math.log(10)) == 10
    k = sep_cma_constants(10, 10)
    assert sum(k.weights) == pytest.approx(1.0) and k.weights[5:] == (0.0,) * 5
    pycma_w = cma.recombination_weights.RecombinationWeights(10)  # the same eq. 49 weights
    assert k.weights[:5] == pytest.approx(list(pycma_w[:5]), rel=1e-14)
    assert k.mu_eff == pytest.approx(pycma_w.mueff, rel=1e-14)
    assert k.c_1 == pytest.approx(2 / (11.3**2 + k.mu_eff) * 12 / 3, rel=1e-15)
    full_cmu = 2 * (k.mu_eff - 2 + 1 / k.mu_eff) / (12**2 + k.mu_eff)
    assert k.c_mu == pytest.approx(full_cmu * 12 / 3, rel=1e-15)
    big = sep_cma_constants(10**6, 45)  # c_1 + c_mu stays < 1; rates ~ 1 / D, not 1 / D**2
    assert 0 < big.c_1 + big.c_mu < 1 and 1e-7 < big.c_mu < 1e-5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ellipsoid_20d_condition_1e6_reaches_1e8_within_7000_evals(seed):
    # separable and ill-conditioned: the diagonal learns the scales. Measured 4,644-4,884
    # evaluations (seeds 0-2, popsize 12, sigma 1, start 1); pycma's CMA_diagonal (its
    # defaults, active weights) 4,392-4,752 from the same start.
    x = torch.nn.Parameter(torch.ones(20, dtype=torch.float64))
    opt = SepCMAES([x], sigma=1.0, seed=seed)
    while opt.num_evals < 7_000 and not opt.best_loss < 1e-8 and not opt.stopped:
        opt.step(lambda pop: ellipsoid(pop.flat))
    assert opt.best_loss < 1e-8
    c = opt.state["population"]["C"]
    assert float(c[0] / c[-1]) > 1e5  # learned 1 / scale (1e6 apart): measured 5.6e5 .. 1.4e6


def test_sphere_1000d_float32_progress():
    # D = 1,000 in float32 (the large-D regime): f(center) falls from 1000 to below 1 in
    # 1,500 generations (measured 0.28, popsize 24, seed 0).
    x = torch.nn.Parameter(torch.ones(1000))
    opt = SepCMAES([x], sigma=1.0, seed=0)
    for _ in range(1500):
        opt.step(lambda pop: (pop.flat**2).sum(-1))
    assert float((x.detach() ** 2).sum()) < 1.0
    assert opt.state["population"]["C"].dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_resume_through_torch_save(dtype):
    def fresh(seed):
        x = torch.nn.Parameter(torch.full((7,), 2.0, dtype=dtype))
        return x, SepCMAES([x], sigma=0.5, seed=seed)

    assert_resumes_exactly(fresh, lambda pop: ellipsoid(pop.flat))


BAD = [
    (dict(lr=0.0), "Invalid lr: 0.0"),
    (dict(lr=-1.0), "Invalid lr: -1.0"),
    (dict(lr=math.nan), "Invalid lr: nan"),
    (dict(sigma=0.0), "Invalid sigma: 0.0"),
    (dict(sigma=math.inf), "Invalid sigma: inf"),
    (dict(popsize=1), "Invalid popsize: 1 .*>= 2"),
    (dict(popsize=2.5), "Invalid popsize: 2.5"),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SepCMAES([torch.nn.Parameter(torch.zeros(4))], **kwargs)


def test_a_negative_scheduled_lr_is_refused_at_the_next_ask_and_state_is_kept():
    x = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = SepCMAES([x], sigma=0.5, seed=0)
    opt.step(lambda pop: ellipsoid(pop.flat))
    before = roundtrip(opt.state_dict())
    opt.param_groups[0]["lr"] = -0.5
    with pytest.raises(ValueError, match="Invalid lr: -0.5"):
        opt.ask()
    torch.testing.assert_close(opt.state_dict()["state"], before["state"], rtol=0, atol=0)


@pytest.mark.parametrize("key,value,match", [
    ("sigma", -1.0, "saved sigma -1.0 is not a finite number > 0"),
    ("sigma", math.nan, "saved sigma nan is not a finite number > 0"),
    ("C", torch.zeros(4, dtype=torch.float64), "saved C has entries <= 0"),
])
def test_a_corrupt_checkpoint_is_refused_and_the_state_kept(key, value, match):
    x = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = SepCMAES([x], sigma=0.5, seed=0)
    opt.step(lambda pop: ellipsoid(pop.flat))
    sd = roundtrip(opt.state_dict())
    sd["state"]["population"][key] = value
    y = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    fresh = SepCMAES([y], sigma=0.5)
    with pytest.raises(ValueError, match=match):
        fresh.load_state_dict(sd)
    assert fresh.state_dict()["state"] == {} and torch.equal(y.detach(), torch.ones(4).double())


# ------------------------------------------------------------- termination criteria
def _run_until_stopped(opt, f, gens):
    with pytest.warns(RuntimeWarning, match="SepCMAES stopped at generation"):
        for _ in range(gens):
            opt.step(lambda pop: f(pop.flat))
            if opt.stopped:
                return


def test_stops_for_good_at_convergence_and_stays_stopped():
    x = torch.nn.Parameter(torch.full((8,), 3.0, dtype=torch.float64))
    opt = SepCMAES([x], sigma=1.0, seed=0)
    sphere = lambda X: X.square().sum(-1)  # noqa: E731
    _run_until_stopped(opt, sphere, 3000)
    assert set(opt.stopped) & {"tolfun", "tolx"}, opt.stopped
    assert float(sphere(x.detach())) < 1e-10  # stopped where it had converged
    gen, center = opt.generation, x.detach().clone()
    assert float(opt.step(lambda pop: sphere(pop.flat))) == opt.last.mean_loss  # a no-op
    assert opt.generation == gen and torch.equal(x.detach(), center)
    with pytest.raises(RuntimeError, match=r"SepCMAES has stopped \(CMA-ES's termination "
                       r"criteria .*or pass looser stop= criteria"):
        opt.ask()
    twin = SepCMAES([torch.nn.Parameter(torch.zeros(8, dtype=torch.float64))], sigma=1.0)
    twin.load_state_dict(roundtrip(opt.state_dict()))
    assert twin.stopped == opt.stopped  # latched across checkpoints


def test_the_criteria_can_be_loosened_or_switched_off():
    ones = lambda X: torch.ones(len(X), dtype=torch.float64)  # noqa: E731 - a plateau
    for stop in (False, {"tolfun": 0, "tolflatfitness": None}):
        opt = SepCMAES([torch.zeros(4, dtype=torch.float64)], sigma=1.0, seed=0, stop=stop)
        for _ in range(30):
            opt.step(lambda pop: ones(pop.flat))
        assert opt.stopped == {} and opt.generation == 30
    opt = SepCMAES([torch.zeros(4, dtype=torch.float64)], sigma=1.0, seed=0)
    _run_until_stopped(opt, ones, 5)  # the defaults end a plateau at once, as pycma's
    assert opt.stopped == {"tolfun": 1e-11} and opt.generation == 1
    x = torch.full((4,), 3.0, dtype=torch.float64)  # a looser tolx ends a sphere run early
    opt = SepCMAES([x], sigma=1.0, seed=0, stop={"tolx": 1e-3})
    _run_until_stopped(opt, lambda X: X.square().sum(-1), 2000)
    assert "tolx" in opt.stopped and 1e-9 < float(x.square().sum()) < 1e-3


def test_a_diverging_run_stops_on_tolupsigma():
    x = torch.zeros(4, dtype=torch.float64)  # a linear loss without a minimum: sigma grows
    opt = SepCMAES([x], sigma=1.0, seed=0, stop={"tolupsigma": 1e6})
    _run_until_stopped(opt, lambda X: X.sum(-1), 2000)
    assert "tolupsigma" in opt.stopped and bool(torch.isfinite(x).all())
    assert opt._st["sigma"] * float(opt._st["C"].max()) ** 0.5 > 1e6


@pytest.mark.parametrize("stop, match", [
    ("yes", r"Invalid stop: 'yes' \(expected a dict"),
    ({"tolfoo": 1}, r"Invalid stop: unknown criteria \['tolfoo'\]"),
    ({"tolx": -1.0}, r"Invalid stop: tolx=-1.0 \(expected a number >= 0"),
    ({"tolx": "1e-3"}, r"Invalid stop: tolx='1e-3'"),
])
def test_bad_stop_options(stop, match):
    with pytest.raises(ValueError, match=match):
        SepCMAES([torch.zeros(3)], stop=stop)
