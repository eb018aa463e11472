"""DE against a plain float64 loop of the textbook algorithm (Storn & Price 1997; jDE of
Brest et al. 2006) driven by the same random numbers; bounds; bad input."""

import math

import pytest
import torch

from evoopt.algorithms.de import DE

from ._helpers import roundtrip, sphere

P, D = 8, 5


def rosen(x):  # one member as a list of floats: the same arithmetic in both runs
    return sum(100 * (x[j + 1] - x[j] ** 2) ** 2 + (1 - x[j]) ** 2 for j in range(len(x) - 1))


def objective(pop):
    return torch.tensor([rosen(row) for row in pop.flat.tolist()], dtype=torch.float64)


def reference(x0, *, gens, seed, strategy, adaptation, F, CR, lr, sigma, lower, upper):
    """The textbook loop, one target and one coordinate at a time, in Python floats. The
    random numbers are drawn from a generator seeded like the optimizer's, in its order:
    the initial N(0, I); per generation jDE's 4 uniforms per target, P x P uniforms whose
    smallest (member i's own left out) pick r1, r2, r3, the crossover uniforms, j_rand."""
    g = torch.Generator()
    g.manual_seed(seed)
    f64 = torch.float64
    z = torch.randn(P, D, generator=g, dtype=f64).tolist()
    X = [[min(max(x0[j] + sigma * z[i][j], lower), upper) for j in range(D)] for i in range(P)]
    fit, Fs, CRs = [rosen(x) for x in X], [F] * P, [CR] * P
    b = min(range(P), key=fit.__getitem__)
    m, fm = list(X[b]), fit[b]
    out = [(X, fit, Fs, CRs, m)]
    for _ in range(gens):
        rnd = torch.rand(P, 4, generator=g, dtype=f64).tolist() if adaptation else None
        u = torch.rand(P, P, generator=g, dtype=f64).tolist()
        cross = torch.rand(P, D, generator=g, dtype=f64).tolist()
        j_rand = torch.randint(D, (P,), generator=g).tolist()
        trials = []
        for i in range(P):
            Fi, CRi = Fs[i], CRs[i]
            if adaptation:
                Fi = 0.1 + rnd[i][0] * 0.9 if rnd[i][1] < 0.1 else Fi
                CRi = rnd[i][2] if rnd[i][3] < 0.1 else CRi
            r = sorted((k for k in range(P) if k != i), key=lambda k: u[i][k])
            t = []
            for j in range(D):
                if strategy == "rand/1/bin":
                    v = X[r[0]][j] + lr * Fi * (X[r[1]][j] - X[r[2]][j])
                else:
                    v = X[i][j] + lr * Fi * (m[j] - X[i][j]) + lr * Fi * (X[r[0]][j] - X[r[1]][j])
                if v < lower:
                    v = (lower + X[i][j]) / 2
                elif v > upper:
                    v = (upper + X[i][j]) / 2
                t.append(v if cross[i][j] <= CRi or j == j_rand[i] else X[i][j])
            trials.append((t, Fi, CRi))
        X, fit, Fs, CRs = list(X), list(fit), list(Fs), list(CRs)
        for i, (t, Fi, CRi) in enumerate(trials):
            ft = rosen(t)
            if ft <= fit[i]:
                X[i], fit[i], Fs[i], CRs[i] = t, ft, Fi, CRi
        b = min(range(P), key=fit.__getitem__)
        if fit[b] < fm:
            m, fm = list(X[b]), fit[b]
        out.append((X, fit, Fs, CRs, m))
    return out


CONFIGS = [
    dict(strategy="rand/1/bin", adaptation="jde", F=0.5, CR=0.9, lr=1.0),
    dict(strategy="rand/1/bin", adaptation=None, F=0.7, CR=0.3, lr=0.8),
    dict(strategy="current-to-best/1/bin", adaptation="jde", F=0.5, CR=0.9, lr=1.0),
    dict(strategy="current-to-best/1/bin", adaptation=None, F=0.6, CR=0.5, lr=1.2),
]


@pytest.mark.parametrize("bounds", [(-math.inf, math.inf), (-0.5, 1.0)], ids=["free", "box"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c['strategy']}-{c['adaptation']}")
def test_de_equals_the_textbook_loop_for_several_generations(cfg, bounds):
    lower, upper = bounds
    x0 = [0.1, -0.2, 0.3, 0.0, 0.5]
    x = torch.nn.Parameter(torch.tensor(x0, dtype=torch.float64))
    opt = DE([x], sigma=0.7, popsize=P, seed=3, lower=lower, upper=upper, **cfg)
    ref = reference(x0, gens=12, seed=3, sigma=0.7, lower=lower, upper=upper, **cfg)
    accepted = 0
    for k, (X, fit, Fs, CRs, m) in enumerate(ref):
        opt.step(objective)
        st = opt.state["population"]
        close = dict(rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(st["population"], torch.tensor(X, dtype=torch.float64), **close)
        torch.testing.assert_close(st["fitness"], torch.tensor(fit, dtype=torch.float64), **close)
        assert st["F"].tolist() == Fs and st["CR"].tolist() == CRs
        torch.testing.assert_close(x.detach(), torch.tensor(m, dtype=torch.float64), **close)
        if k:
            accepted += sum(a != b for a, b in zip(fit, ref[k - 1][1]))
    assert accepted > 0  # the comparison covered replacements, not a frozen population
    if lower > -math.inf:
        pop = st["population"]
        assert bool(((pop >= lower) & (pop <= upper)).all())


def test_jde_rates_stay_in_their_ranges_and_do_adapt():
    x = torch.nn.Parameter(torch.full((10,), 3.0, dtype=torch.float64))
    opt = DE([x], sigma=1.0, popsize=20, seed=0)
    for _ in range(100):
        opt.step(lambda pop: sphere(pop.flat))
    F, CR = opt.state["population"]["F"], opt.state["population"]["CR"]
    assert bool(((F >= 0.1) & (F <= 1.0)).all()) and bool(((CR >= 0) & (CR <= 1)).all())
    assert len(set(F.tolist())) > 1 and len(set(CR.tolist())) > 1


def test_the_center_is_the_best_target_and_never_gets_worse():
    x = torch.nn.Parameter(torch.full((6,), 2.0, dtype=torch.float64))
    opt = DE([x], sigma=0.5, popsize=12, seed=1)
    prev = math.inf
    for _ in range(30):
        opt.step(objective)
        st = opt.state["population"]
        assert st["center_loss"] == float(st["fitness"].min()) <= prev
        assert st["center_loss"] == rosen(x.detach().tolist()) == opt.best_loss
        prev = st["center_loss"]


def test_a_schedule_on_lr_scales_the_mutation():
    # lr = 0 in rand/1: every mutant is a target (x_r1), so trials only recombine targets
    x = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = DE([x], sigma=1.0, popsize=10, seed=0, CR=1.0, adaptation=None)
    opt.step(lambda pop: sphere(pop.flat))
    opt.param_groups[0]["lr"] = 0.0
    targets = {tuple(r) for r in opt.state["population"]["population"].tolist()}
    pop = opt.ask()
    assert {tuple(r) for r in pop.flat.tolist()} <= targets
    opt.tell(sphere(pop.flat))


def test_bounds_hold_for_every_trial_on_an_optimum_outside_the_box():
    x = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt = DE([x], sigma=1.0, popsize=20, seed=0, lower=-1.0, upper=0.5)
    for _ in range(150):
        pop = opt.ask()
        assert bool(((pop.flat >= -1.0) & (pop.flat <= 0.5)).all())
        opt.tell(((pop.flat - 2.0) ** 2).sum(-1))  # optimum at 2: the corner 0.5 is best
    torch.testing.assert_close(x.detach(), torch.full((5,), 0.5, dtype=torch.float64),
                               rtol=0, atol=1e-6)


def test_a_nan_trial_never_replaces_its_target():
    x = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = DE([x], sigma=1.0, popsize=6, seed=0)
    opt.step(lambda pop: torch.tensor([1e6, 1e6, 1e6, 1e6, 1e6, 0.0], dtype=torch.float64))
    before = opt.state["population"]["population"].clone()
    opt.ask()
    with pytest.warns(RuntimeWarning, match="rank worst"):
        opt.tell(torch.tensor([math.nan] * 5 + [1.0], dtype=torch.float64))
    assert torch.equal(opt.state["population"]["population"][:5], before[:5])


def _p():
    return [torch.nn.Parameter(torch.zeros(D))]


BAD = [
    (dict(strategy="best/2/bin"), r"Invalid strategy: 'best/2/bin' \(expected one of"),
    (dict(F=0.0), r"Invalid F: 0.0 \(expected a number in \(0.0, 2.0\]\)"),
    (dict(F=2.5), r"Invalid F: 2.5"),
    (dict(CR=-0.1), r"Invalid CR: -0.1 \(expected a number in \[0.0, 1.0\]\)"),
    (dict(CR=math.nan), r"Invalid CR: nan"),
    (dict(adaptation="shade"), r"Invalid adaptation: 'shade' \(expected 'jde' or None\)"),
    (dict(popsize=3), r"Invalid popsize: 3 \(expected an integer >= 4\)"),
    (dict(lr=-1.0), r"Invalid lr: -1.0"),
    (dict(sigma=0.0), r"Invalid sigma: 0.0"),
    (dict(lower=1.0, upper=1.0), r"Invalid bounds: lower=1.0, upper=1.0 \(expected lower < "),
    (dict(lower=math.nan), r"Invalid lower: nan"),
    (dict(upper="1"), r"Invalid upper: '1'"),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DE(_p(), **kwargs)


def test_a_start_outside_the_bounds_is_refused_at_the_first_ask():
    x = torch.nn.Parameter(torch.tensor([0.0, 2.0]))
    opt = DE([x], lower=-1.0, upper=1.0, popsize=4)
    with pytest.raises(ValueError, match=r"coordinate 1 is 2.0, outside the bounds \[-1.0, 1"):
        opt.ask()
    assert "population" not in opt.state


def test_a_schedule_may_not_move_lr_below_zero():
    opt = DE(_p(), popsize=4)
    opt.param_groups[0]["lr"] = -0.5
    with pytest.raises(ValueError, match="Invalid lr: -0.5"):
        opt.ask()


def test_a_checkpoint_with_another_population_shape_is_refused():
    x = torch.nn.Parameter(torch.zeros(D))
    opt = DE([x], popsize=6, seed=0)
    opt.step(lambda pop: sphere(pop.flat))
    sd = roundtrip(opt.state_dict())
    sd["state"]["population"]["fitness"] = torch.zeros(5, dtype=torch.float64)
    fresh = DE([torch.nn.Parameter(torch.zeros(D))], popsize=6, seed=0)
    with pytest.raises(ValueError, match=r"saved fitness has shape \(5,\), expected \(6,\)"):
        fresh.load_state_dict(sd)
    assert not fresh.state


def test_lr_is_read_per_group():
    # group a: lr = 0, so in rand/1 its trial coordinates are copied from targets (x_r1 or
    # x_i); group b: lr = 1, new values
    a = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = DE([{"params": [a]}, {"params": [b]}], sigma=1.0, popsize=10, seed=0, CR=1.0)
    opt.step(lambda pop: sphere(pop.flat))
    opt.param_groups[0]["lr"] = 0.0
    X = opt.state["population"]["population"]
    pop = opt.ask()
    for j in range(6):
        olds = set(X[:, j].tolist())
        new = [v not in olds for v in pop.flat[:, j].tolist()]
        assert not any(new) if j < 3 else all(new)
    opt.tell(sphere(pop.flat))
