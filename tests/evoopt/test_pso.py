"""PSO against one plain float64 loop of the update equations (Kennedy & Eberhart 1995 with
Clerc & Kennedy's constriction) driven by the same random numbers; topologies; bounds; bad
input."""

import math

import pytest
import torch

from evoopt.algorithms.pso import C_CONSTRICTION, CHI, PSO

from ._helpers import rastrigin, roundtrip, sphere

P, D = 7, 4


def rosen(x):  # one member as a list of floats: the same arithmetic in both runs
    return sum(100 * (x[j + 1] - x[j] ** 2) ** 2 + (1 - x[j]) ** 2 for j in range(len(x) - 1))


def objective(pop):
    return torch.tensor([rosen(row) for row in pop.flat.tolist()], dtype=torch.float64)


def reference(x0, *, gens, seed, topology, w, c1, c2, sigma, lower, upper):
    """The update equations one particle and one coordinate at a time, in Python floats,
    from a generator seeded like the optimizer's and drawn in its order: the initial
    N(0, I), then per generation r1 and r2 ([2, P, D] uniforms)."""
    g = torch.Generator()
    g.manual_seed(seed)
    f64 = torch.float64
    z = torch.randn(P, D, generator=g, dtype=f64).tolist()
    X = [[min(max(x0[j] + sigma * z[i][j], lower), upper) for j in range(D)] for i in range(P)]
    V = [[0.0] * D for _ in range(P)]
    Pb, fit = [list(x) for x in X], [rosen(x) for x in X]
    b = min(range(P), key=fit.__getitem__)
    m, fm = list(Pb[b]), fit[b]
    out = [(X, V, Pb, fit, m)]
    for _ in range(gens):
        r1, r2 = torch.rand(2, P, D, generator=g, dtype=f64).tolist()
        hoods = [[i, (i - 1) % P, (i + 1) % P] for i in range(P)]
        lbest = [m if topology == "global" else Pb[min(h, key=fit.__getitem__)] for h in hoods]
        X2, V2 = [], []
        for i in range(P):
            xi, vi = [], []
            for j in range(D):
                v = (w * V[i][j] + c1 * r1[i][j] * (Pb[i][j] - X[i][j])
                     + c2 * r2[i][j] * (lbest[i][j] - X[i][j]))
                x = X[i][j] + v
                if x < lower or x > upper:
                    x, v = min(max(x, lower), upper), 0.0
                xi.append(x)
                vi.append(v)
            X2.append(xi)
            V2.append(vi)
        X, V, Pb, fit = X2, V2, list(Pb), list(fit)
        for i in range(P):
            fx = rosen(X[i])
            if fx < fit[i]:
                Pb[i], fit[i] = list(X[i]), fx
        b = min(range(P), key=fit.__getitem__)
        if fit[b] < fm:
            m, fm = list(Pb[b]), fit[b]
        out.append((X, V, Pb, fit, m))
    return out


@pytest.mark.parametrize("bounds", [(-math.inf, math.inf), (-0.6, 0.8)], ids=["free", "box"])
@pytest.mark.parametrize("topology", ["global", "ring"])
@pytest.mark.parametrize("w", [CHI, 0.5])
def test_pso_equals_the_update_equations_for_several_generations(topology, w, bounds):
    lower, upper = bounds
    x0 = [0.2, -0.1, 0.4, 0.0]
    c1, c2 = C_CONSTRICTION, 1.2
    x = torch.nn.Parameter(torch.tensor(x0, dtype=torch.float64))
    opt = PSO([x], lr=w, sigma=0.5, popsize=P, seed=5, topology=topology, c1=c1, c2=c2,
              lower=lower, upper=upper)
    ref = reference(x0, gens=15, seed=5, topology=topology, w=w, c1=c1, c2=c2, sigma=0.5,
                    lower=lower, upper=upper)
    close = dict(rtol=1e-12, atol=1e-14)
    improved = 0
    for k, (X, V, Pb, fit, m) in enumerate(ref):
        opt.step(objective)
        st = opt.state["population"]
        for key, want in (("position", X), ("velocity", V), ("personal_best", Pb),
                          ("fitness", fit)):
            torch.testing.assert_close(st[key], torch.tensor(want, dtype=torch.float64), **close)
        torch.testing.assert_close(x.detach(), torch.tensor(m, dtype=torch.float64), **close)
        if k:
            improved += sum(a != b for a, b in zip(fit, ref[k - 1][3]))
    assert improved > 0


def test_the_ring_uses_only_the_two_neighbours():
    # ring: a particle next to the best follows it, one two places away does not
    x = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = PSO([x], sigma=1.0, popsize=6, seed=0, topology="ring")
    opt.step(lambda pop: torch.tensor([5.0, 4.0, 3.0, 0.0, 2.0, 1.0], dtype=torch.float64))
    st = opt.state["population"]
    lbest = opt._neighbourhood_best(st)
    pb = st["personal_best"]
    for i, k in enumerate([5, 2, 3, 3, 3, 5]):  # argmin over (i, i-1, i+1)
        assert torch.equal(lbest[i], pb[k])


def test_converges_on_rastrigin_further_with_the_ring_than_from_the_start():
    # a stated budget: ring lbest, D = 10, 30,000 evaluations from f(3,...,3) = 90
    x = torch.nn.Parameter(torch.full((10,), 3.0, dtype=torch.float64))
    opt = PSO([x], sigma=1.0, topology="ring", seed=0)
    while opt.num_evals < 30_000:
        opt.step(lambda pop: rastrigin(pop.flat))
    assert float(rastrigin(x.detach())) < 30.0


def test_linearly_decreasing_inertia_is_a_scheduler_on_lr():
    x = torch.nn.Parameter(torch.full((5,), 1.0, dtype=torch.float64))
    opt = PSO([x], lr=0.9, sigma=0.5, seed=0)
    sched = torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.4 / 0.9, total_iters=10)
    for _ in range(10):
        opt.step(lambda pop: sphere(pop.flat))
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4)


def test_bounds_hold_for_every_position_on_an_optimum_outside_the_box():
    x = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = PSO([x], sigma=0.5, popsize=12, seed=0, lower=-1.0, upper=0.5)
    for _ in range(100):
        pop = opt.ask()
        assert bool(((pop.flat >= -1.0) & (pop.flat <= 0.5)).all())
        opt.tell(((pop.flat - 2.0) ** 2).sum(-1))
    torch.testing.assert_close(x.detach(), torch.full((3,), 0.5, dtype=torch.float64))


def _p():
    return [torch.nn.Parameter(torch.zeros(D))]


BAD = [
    (dict(topology="star"), r"Invalid topology: 'star' \(expected one of \['global', 'ring'\]"),
    (dict(c1=-1.0), r"Invalid c1: -1.0 \(expected a finite number >= 0\)"),
    (dict(c2=math.inf), r"Invalid c2: inf"),
    (dict(popsize=1), r"Invalid popsize: 1 \(expected an integer >= 2\)"),
    (dict(lr=0.0), r"Invalid lr: 0.0 \(expected a finite number > 0\)"),
    (dict(sigma=-0.1), r"Invalid sigma: -0.1"),
    (dict(lower=2.0, upper=1.0), r"Invalid bounds: lower=2.0, upper=1.0"),
    (dict(lower=True), r"Invalid lower: True"),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PSO(_p(), **kwargs)


def test_a_start_outside_the_bounds_is_refused_at_the_first_ask():
    x = torch.nn.Parameter(torch.tensor([-3.0, 0.0]))
    opt = PSO([x], lower=-1.0, upper=1.0)
    with pytest.raises(ValueError, match=r"coordinate 0 is -3.0, outside the bounds"):
        opt.ask()


def test_a_checkpoint_with_another_swarm_shape_is_refused():
    opt = PSO(_p(), popsize=5, seed=0)
    opt.step(lambda pop: sphere(pop.flat))
    sd = roundtrip(opt.state_dict())
    sd["state"]["population"]["velocity"] = torch.zeros(5, D + 1)
    fresh = PSO(_p(), popsize=5, seed=0)
    with pytest.raises(ValueError, match=r"saved velocity has shape \(5, 5\), expected \(5, 4\)"):
        fresh.load_state_dict(sd)
    assert not fresh.state
