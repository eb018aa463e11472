"""GA against a plain float64 loop of tournament selection, SBX (Deb & Agrawal 1995),
Gaussian mutation and elitist replacement, driven by the same random numbers; bad input."""

import math

import pytest
import torch

from evoopt.algorithms.ga import GA, sbx_beta

from ._helpers import roundtrip, sphere

D = 4


def rosen(x):  # one member as a list of floats: the same arithmetic in both runs
    return sum(100 * (x[j + 1] - x[j] ** 2) ** 2 + (1 - x[j]) ** 2 for j in range(len(x) - 1))


def objective(pop):
    return torch.tensor([rosen(row) for row in pop.flat.tolist()], dtype=torch.float64)


def order(values):
    """Indices by value, ties by index (a strict order)."""
    return sorted(range(len(values)), key=lambda i: (values[i], i))


def reference(x0, *, P, gens, seed, lr, sigma, num_elite, k, pc, eta):
    """One generation at a time in Python floats, from a generator seeded like the
    optimizer's and drawn in its order: the initial N(0, I); per generation the tournament
    contestants, the pair and coordinate crossover uniforms, SBX's uniforms, the mutation
    uniforms and the mutation's N(0, 1)."""
    g = torch.Generator()
    g.manual_seed(seed)
    f64 = torch.float64
    z = torch.randn(P, D, generator=g, dtype=f64).tolist()
    X = [[x0[j] + sigma * z[i][j] for j in range(D)] for i in range(P)]
    fit = [rosen(x) for x in X]
    b = order(fit)[0]
    m, fm = list(X[b]), fit[b]
    out = [(X, fit, m)]
    n, pm = (P + 1) // 2, min(1.0, lr / D)
    for _ in range(gens):
        cont = torch.randint(P, (2 * n, k), generator=g).tolist()
        pair = torch.rand(n, 1, generator=g, dtype=f64).tolist()
        coord = torch.rand(n, D, generator=g, dtype=f64).tolist()
        u = torch.rand(n, D, generator=g, dtype=f64).tolist()
        mut = torch.rand(P, D, generator=g, dtype=f64).tolist()
        noise = torch.randn(P, D, generator=g, dtype=f64).tolist()
        rank = {i: r for r, i in enumerate(order(fit))}
        win = [min(c, key=rank.__getitem__) for c in cont]
        c1s, c2s = [], []
        for p in range(n):
            a, bb = X[win[p]], X[win[n + p]]
            c1, c2 = list(a), list(bb)
            for j in range(D):
                if pair[p][0] < pc and coord[p][j] < 0.5:
                    e = 1 / (eta + 1)
                    uj = u[p][j]
                    beta = (2 * uj) ** e if uj <= 0.5 else (1 / (2 * (1 - uj))) ** e
                    c1[j] = ((1 + beta) * a[j] + (1 - beta) * bb[j]) / 2
                    c2[j] = ((1 - beta) * a[j] + (1 + beta) * bb[j]) / 2
            c1s.append(c1)
            c2s.append(c2)
        kids = (c1s + c2s)[:P]
        kids = [[c[j] + sigma * noise[i][j] if mut[i][j] < pm else c[j] for j in range(D)]
                for i, c in enumerate(kids)]
        elite = order(fit)[:num_elite]
        pool = [X[i] for i in elite] + kids
        pool_f = [fit[i] for i in elite] + [rosen(c) for c in kids]
        keep = order(pool_f)[:P]
        X, fit = [pool[i] for i in keep], [pool_f[i] for i in keep]
        if fit[0] < fm:
            m, fm = list(X[0]), fit[0]
        out.append((X, fit, m))
    return out


CONFIGS = [
    dict(P=8, lr=1.0, sigma=0.3, num_elite=1, k=2, pc=0.9, eta=15.0),
    dict(P=7, lr=2.0, sigma=0.5, num_elite=0, k=3, pc=1.0, eta=2.0),
    dict(P=6, lr=9.0, sigma=0.2, num_elite=3, k=1, pc=0.5, eta=30.0),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["binary", "odd-no-elite", "p_m-1"])
def test_ga_equals_the_plain_loop_for_several_generations(cfg):
    x0 = [0.3, -0.2, 0.1, 0.4]
    x = torch.nn.Parameter(torch.tensor(x0, dtype=torch.float64))
    opt = GA([x], lr=cfg["lr"], sigma=cfg["sigma"], popsize=cfg["P"], seed=11,
             num_elite=cfg["num_elite"], tournament_size=cfg["k"], crossover_prob=cfg["pc"],
             eta=cfg["eta"])
    ref = reference(x0, gens=12, seed=11, **cfg)
    close = dict(rtol=1e-12, atol=1e-14)
    for X, fit, m in ref:
        opt.step(objective)
        st = opt.state["population"]
        torch.testing.assert_close(st["population"], torch.tensor(X, dtype=torch.float64), **close)
        torch.testing.assert_close(st["fitness"], torch.tensor(fit, dtype=torch.float64), **close)
        torch.testing.assert_close(x.detach(), torch.tensor(m, dtype=torch.float64), **close)
    assert ref[-1][1][0] < ref[0][1][0]  # it improved: the comparison covered real steps


def test_sbx_spread_factor_has_the_papers_second_moment():
    # E beta^2 = (1/2)/(1 + 2/(eta+1)) + (1/2)/(1 - 2/(eta+1)), the width's B2; and the
    # children's mean is the parents' (c1 + c2 = a + b)
    eta = 5.0
    u = torch.rand(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    beta = sbx_beta(u, eta)
    e = 2 / (eta + 1)
    assert float((beta**2).mean()) == pytest.approx(0.5 / (1 + e) + 0.5 / (1 - e), rel=0.01)
    a, b = torch.tensor(1.0, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)
    c1, c2 = ((1 + beta) * a + (1 - beta) * b) / 2, ((1 - beta) * a + (1 + beta) * b) / 2
    torch.testing.assert_close(c1 + c2, torch.full_like(c1, -1.0))


def test_with_elitism_the_best_loss_never_gets_worse_and_converges_on_the_sphere():
    # a stated budget: D = 10 from 3 * ones (f = 90), 10,000 evaluations
    x = torch.nn.Parameter(torch.full((10,), 3.0, dtype=torch.float64))
    opt = GA([x], sigma=0.5, popsize=50, num_elite=2, seed=0)
    prev = math.inf
    while opt.num_evals < 10_000:
        opt.step(lambda pop: sphere(pop.flat))
        assert opt.state["population"]["center_loss"] <= prev
        prev = opt.state["population"]["center_loss"]
    assert float(sphere(x.detach())) < 0.05


def _p():
    return [torch.nn.Parameter(torch.zeros(D))]


BAD = [
    (dict(num_elite=-1), r"Invalid num_elite: -1 \(expected an integer >= 0\)"),
    (dict(num_elite=9, popsize=8), r"Invalid num_elite: 9 \(expected at most popsize=8\)"),
    (dict(tournament_size=0), r"Invalid tournament_size: 0 \(expected an integer >= 1\)"),
    (dict(crossover_prob=1.5), r"Invalid crossover_prob: 1.5 \(expected a number in \[0.0, "),
    (dict(eta=1.0), r"Invalid eta: 1.0 \(expected a number in \(1.0, inf\)\)"),
    (dict(popsize=1), r"Invalid popsize: 1 \(expected an integer >= 2\)"),
    (dict(lr=0.0), r"Invalid lr: 0.0"),
    (dict(sigma=math.inf), r"Invalid sigma: inf"),
    (dict(lower=0.0, upper=-1.0), r"Invalid bounds: lower=0.0, upper=-1.0"),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GA(_p(), **kwargs)


def test_bounds_clip_every_child():
    x = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = GA([x], sigma=1.0, popsize=10, seed=0, lower=-0.5, upper=0.5)
    for _ in range(20):
        pop = opt.ask()
        assert bool(((pop.flat >= -0.5) & (pop.flat <= 0.5)).all())
        opt.tell(((pop.flat - 2.0) ** 2).sum(-1))


def test_a_checkpoint_with_another_population_shape_is_refused():
    opt = GA(_p(), popsize=6, seed=0)
    opt.step(lambda pop: sphere(pop.flat))
    sd = roundtrip(opt.state_dict())
    sd["state"]["population"]["population"] = torch.zeros(6, D + 2)
    fresh = GA(_p(), popsize=6, seed=0)
    with pytest.raises(ValueError, match=r"saved population has shape \(6, 6\), expected \(6, 4"):
        fresh.load_state_dict(sd)
