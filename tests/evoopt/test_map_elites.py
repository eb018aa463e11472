"""MAP-Elites against a plain float64 loop of Mouret & Clune's pseudo-code (with Iso+LineDD)
driven by the same random numbers; quality diversity on the planar arm (coverage and
QD-score, against a GA); the three ways descriptors arrive; bad input; checkpoints; the
contract extension (descriptors refused by algorithms that take none)."""

import copy
import math
import re
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import evoopt
from evoopt.algorithms import map_elites
from evoopt.algorithms.map_elites import MAPElites

from ._helpers import roundtrip, sphere

D, K = 6, 2
BOUNDS = [(-1.0, 1.0), (-1.0, 1.0)]


def arm_member(x):
    """The planar arm (Cully et al. 2015; pyribs' tutorial): joint angles -> (loss = their
    variance, descriptor = the end effector of an arm of total length 1), in Python floats."""
    n, a, px, py = len(x), 0.0, 0.0, 0.0
    for v in x:
        a += v
        px, py = px + math.cos(a) / n, py + math.sin(a) / n
    mean = sum(x) / n
    return sum((v - mean) ** 2 for v in x) / (n - 1), [px, py]


def arm(pop):
    """The arm as a population objective returning ``(losses, descriptors)``."""
    out = [arm_member(row) for row in pop.flat.tolist()]
    return (torch.tensor([f for f, _ in out], dtype=torch.float64),
            torch.tensor([b for _, b in out], dtype=torch.float64))


def arm_batched(pop):
    a = pop.flat.cumsum(1)
    n = pop.flat.shape[1]
    return pop.flat.var(1), torch.stack([a.cos().sum(1), a.sin().sum(1)], 1) / n


def cell_of(b, cells):
    """Row-major flat cell of descriptor ``b`` (the module docstring's c_j, clipped)."""
    flat = 0
    for (lo, hi), n, v in zip(BOUNDS, cells, b):
        flat = flat * n + min(n - 1, max(0, math.floor((v - lo) / (hi - lo) * n)))
    return flat


def reference(x0, *, P, gens, seed, lr, sigma, line_sigma, cells):
    """Mouret & Clune's loop in Python floats, from a generator seeded like the optimizer's
    and drawn in its order: N(0, I) for the first generation, then per generation the parents
    (uniform over the filled cells in cell order), the mutation's N(0, I), the second elites
    and the line's N(0, 1). Children are inserted one at a time. Returns {cell: (x, f, b)}
    after each generation."""
    g = torch.Generator()
    g.manual_seed(seed)
    f64 = torch.float64
    z = torch.randn(P, D, generator=g, dtype=f64).tolist()
    kids = [[x0[j] + sigma * z[p][j] for j in range(D)] for p in range(P)]
    archive, out = {}, []
    for gen in range(gens + 1):
        if gen:
            idx = sorted(archive)
            i = torch.randint(len(idx), (P,), generator=g).tolist()
            z = torch.randn(P, D, generator=g, dtype=f64).tolist()
            j, t = i, [[0.0]] * P  # the line is drawn only with line_sigma > 0
            if line_sigma > 0:
                j = torch.randint(len(idx), (P,), generator=g).tolist()
                t = torch.randn(P, 1, generator=g, dtype=f64).tolist()
            kids = []
            for p in range(P):
                xi, xj = archive[idx[i[p]]][0], archive[idx[j[p]]][0]
                kids.append([xi[d] + lr * (sigma * z[p][d] + (line_sigma * t[p][0])
                                            * (xj[d] - xi[d])) for d in range(D)])
        for x in kids:
            f, b = arm_member(x)
            c = cell_of(b, cells)
            if c not in archive or f < archive[c][1]:
                archive[c] = (x, f, b)
        out.append(dict(archive))
    return out


def as_dict(archive):
    return {c: (x, f, b) for c, x, f, b in zip(archive.cells.tolist(), archive.solutions.tolist(),
                                               archive.losses.tolist(),
                                               archive.descriptors.tolist())}


def make(x, **kw):
    kw = {**dict(sigma=0.3, cells=(5, 4), descriptor_bounds=BOUNDS, popsize=16, seed=3), **kw}
    return MAPElites([x], **kw)


# ------------------------------------------------------------------ the reference
@pytest.mark.parametrize("line_sigma,lr", [(0.0, 1.0), (0.3, 0.7)])
def test_equals_the_plain_loop_of_the_paper_in_float64(line_sigma, lr):
    x0 = [0.1 * j for j in range(D)]
    x = torch.tensor(x0, dtype=torch.float64)
    opt = make(x, lr=lr, line_sigma=line_sigma)
    ref = reference(x0, P=16, gens=8, seed=3, lr=lr, sigma=0.3, line_sigma=line_sigma,
                    cells=(5, 4))
    for expected in ref:
        opt.step(arm)
        assert as_dict(opt.archive) == expected  # exact: cells, elites, losses, descriptors
        best = min(expected.values(), key=lambda e: e[1])
        assert x.tolist() == best[0] and opt.best_loss == best[1]  # the center: the best elite
    assert 5 < len(ref[-1]) <= 20


def test_every_elite_is_its_cell_s_best_and_lies_in_its_cell():
    x = torch.zeros(D, dtype=torch.float64)
    opt = make(x, line_sigma=0.2)
    seen = {}
    for _ in range(10):
        pop = opt.ask()
        losses, desc = arm(pop)
        for c, f in zip(opt.cell_index(desc).tolist(), losses.tolist()):
            seen[c] = min(f, seen.get(c, math.inf))
        opt.tell(losses, descriptors=desc)
    a = opt.archive
    assert torch.equal(opt.cell_index(a.descriptors), a.cells)
    assert dict(zip(a.cells.tolist(), a.losses.tolist())) == seen
    torch.testing.assert_close(arm(evoopt.Population(a.solutions, opt.layout))[0], a.losses,
                               rtol=0, atol=0)
    assert a.coverage == len(seen) / 20
    assert a.qd_score == pytest.approx(sum(-f for f in seen.values()))  # qd_offset 0


# ------------------------------------------------------------- quality diversity
ARM_D, ARM_BUDGET = 10, 10_000


def _arm_run(cls, seed, **kw):
    x = torch.zeros(ARM_D, dtype=torch.float64)
    opt = cls([x], sigma=0.1, popsize=100, seed=seed, **kw)
    objective = arm_batched if cls.takes_descriptors else (lambda pop: arm_batched(pop)[0])
    while opt.num_evals < ARM_BUDGET:
        opt.step(objective)
    return opt


@pytest.mark.parametrize("seed", [0, 1])
def test_arm_coverage_and_qd_score_beat_a_ga(seed):
    # The end effector reaches a disc of radius 1: about 0.8 of the 20 x 20 grid's cells over
    # [-1, 1]^2. Measured at 10,000 evaluations, P = 100, sigma = 0.1 (seeds 0-3): Iso+LineDD
    # coverage 0.78 .. 0.80, QD-score (offset 1) 297.4 .. 304.0; isotropic alone 0.75 .. 0.785,
    # 287.9 .. 299.0; the GA's final population covers 0.0125 .. 0.015 of the same grid (it
    # converges to one posture)
    grid = dict(cells=20, descriptor_bounds=BOUNDS, qd_offset=1.0)
    line = _arm_run(MAPElites, seed, line_sigma=0.2, **grid).archive
    iso = _arm_run(MAPElites, seed, **grid).archive
    assert line.coverage > 0.75 and line.qd_score > 285
    assert iso.coverage > 0.72 and iso.qd_score > 275
    ga = _arm_run(evoopt.GA, seed)
    pop = evoopt.Population(ga.state["population"]["population"], ga.layout)
    ga_cells = MAPElites([torch.zeros(ARM_D)], sigma=0.1, **grid).cell_index(arm_batched(pop)[1])
    ga_coverage = len(set(ga_cells.tolist())) / 400
    assert ga_coverage < 0.05 and iso.coverage > 10 * ga_coverage


def test_the_docstring_example_runs_and_fills_the_grid():
    code = textwrap.dedent(map_elites.__doc__.split("::\n\n")[-1])
    ns: dict = {}
    exec(compile(code, "map_elites docstring", "exec"), ns)
    assert ns["opt"].generation == 100
    assert ns["opt"].archive.coverage > 0.7  # measured 0.7825


def test_the_readme_snippet_runs_and_fills_the_grid(capsys):
    text = (Path(__file__).parents[2] / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "MAPElites" in b)
    ns: dict = {}
    exec(compile(code, "README quality diversity", "exec"), ns)
    assert ns["qd"].archive.coverage > 0.75  # measured 0.79 (QD-score 297), as it says
    assert "coverage 0." in capsys.readouterr().out


# ------------------------------------------------- descriptors: three ways, one archive
def _by_tell(x):
    opt = make(x)
    for _ in range(6):
        pop = opt.ask()
        losses, desc = arm(pop)
        opt.tell(losses, descriptors=desc)
    return opt


def _by_objective(x):
    opt = make(x)
    for _ in range(6):
        opt.step(arm)
    return opt


def _by_closure(x):
    opt = make(x)
    for _ in range(6):
        opt.step(lambda: arm_member(x.tolist()))  # the member loaded into x: (loss, descriptor)
    return opt


def _by_descriptor_fn(x):
    opt = make(x, descriptor=lambda pop: arm(pop)[1])
    for _ in range(6):
        opt.step(lambda pop: arm(pop)[0])  # losses only
    return opt


@pytest.mark.parametrize("way", [_by_objective, _by_closure, _by_descriptor_fn])
def test_descriptors_by_tell_objective_closure_or_function_give_the_same_archive(way):
    a = _by_tell(torch.zeros(D, dtype=torch.float64)).archive
    x = torch.zeros(D, dtype=torch.float64)
    b = way(x).archive
    assert as_dict(a) == as_dict(b) and len(a) > 5


def _arm_losses(pop):
    return arm_batched(pop)[0]


@pytest.mark.ray
def test_ray_evaluated_generations_give_the_same_archive():
    ray = pytest.importorskip("ray")
    from evoopt.distributed import RayEvaluator

    def run(objective):
        x = torch.zeros(D, dtype=torch.float64)
        opt = make(x, line_sigma=0.2, descriptor=lambda pop: arm_batched(pop)[1])
        for _ in range(4):
            opt.step(objective)
        return as_dict(opt.archive)

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with RayEvaluator(lambda: _arm_losses, num_actors=2, num_cpus_per_actor=0.5) as ev:
            assert run(ev) == run(_arm_losses)
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------------------- bad input
BAD_ARGS = [
    (dict(cells=0), r"Invalid cells: 0 \(expected an integer >= 1\)"),
    (dict(cells=(5,)), r"Invalid cells: \(5,\) \(expected an integer >= 1 or 2 of them"),
    (dict(cells=2.5), r"Invalid cells: 2.5"),
    (dict(descriptor_bounds=[]), r"Invalid descriptor_bounds: \[\] \(expected a non-empty"),
    (dict(descriptor_bounds=[(1.0, 0.0)]), r"Invalid descriptor_bounds: \[\(1.0, 0.0\)\]"),
    (dict(descriptor_bounds=[(0.0, math.inf)]), r"Invalid descriptor_bounds: .*finite numbers"),
    (dict(descriptor_bounds="ab"), r"Invalid descriptor_bounds: 'ab'"),
    (dict(descriptor=3), r"Invalid descriptor: 3 \(expected None or a function"),
    (dict(line_sigma=-0.1), r"Invalid line_sigma: -0.1 \(expected a finite number >= 0\)"),
    (dict(qd_offset=math.nan), r"Invalid qd_offset: nan \(expected a finite number\)"),
    (dict(sigma=0.0), r"Invalid sigma: 0.0"),
    (dict(lr=-1.0), r"Invalid lr: -1.0"),
    (dict(lower=1.0, upper=0.0), r"Invalid bounds: lower=1.0, upper=0.0"),
]


@pytest.mark.parametrize("kwargs,match", BAD_ARGS)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(torch.zeros(D), **kwargs)


BAD_TELLS = [
    (lambda l, d: (l, None), r"Invalid descriptors: None \(MAPElites needs one behaviour "
     r"descriptor per member: tell\(losses, descriptors=D\) with D of shape \(16, 2\)"),
    (lambda l, d: (l, d[:, :1]), r"Invalid descriptors: shape \(16, 1\) \(expected \(16, 2\)"),
    (lambda l, d: (l, d[:-1]), r"Invalid descriptors: shape \(15, 2\)"),
    (lambda l, d: (l, d.index_fill(0, torch.tensor([2]), math.nan)),
     r"Invalid descriptors: member 2 has \[nan, nan\] \(expected finite values"),
    (lambda l, d: (l, d > 0), r"Invalid descriptors: the descriptors has dtype torch.bool"),
    (lambda l, d: (l, "far"), r"Invalid descriptors: could not convert the descriptors"),
]


@pytest.mark.parametrize("bad", range(len(BAD_TELLS)))
def test_bad_descriptors_are_refused_and_the_tell_can_be_retried(bad):
    make_bad, match = BAD_TELLS[bad]
    x = torch.zeros(D, dtype=torch.float64)
    opt = make(x)
    opt.step(arm)
    twin = copy.deepcopy(opt)
    before = roundtrip(opt.state_dict())
    pop = opt.ask()
    losses, desc = arm(pop)
    with pytest.raises(ValueError, match=match):
        opt.tell(*make_bad(losses, desc))
    torch.testing.assert_close(opt.state_dict()["state"], before["state"], rtol=0, atol=0)
    opt.tell(losses, descriptors=desc)  # the generation is still pending
    twin.step(arm)
    assert as_dict(opt.archive) == as_dict(twin.archive)


def test_a_nan_descriptor_is_fine_where_the_loss_is_not_finite():
    x = torch.zeros(D, dtype=torch.float64)
    opt = make(x)
    opt.step(arm)
    pop = opt.ask()
    losses, desc = arm(pop)
    losses[[1, 4]], desc[[1, 4]] = math.inf, math.nan
    with pytest.warns(RuntimeWarning, match="rank worst"):
        opt.tell(losses, descriptors=desc)
    for i in (1, 4):  # never entered the archive
        assert not (opt.archive.solutions == pop.flat[i]).all(1).any()
    assert torch.isfinite(opt.archive.losses).all()


@pytest.mark.parametrize("closure,match", [
    (lambda x: (lambda: arm_member(x.tolist())[0] if x[0] > 0 else arm_member(x.tolist())),
     "Invalid closure: member .* returned a loss without a descriptor"),
    (lambda x: (lambda: (1.0, [0.0] * (1 + int(x[0] > 0)))),
     r"Invalid descriptors: the members' descriptors have sizes \[1, 2\]"),
    (lambda x: (lambda: (1.0, [0.0])), r"Invalid descriptors: shape \(16, 1\)"),
])
def test_bad_closure_descriptors_leave_the_optimizer_as_it_was(closure, match):
    x = torch.zeros(D, dtype=torch.float64)
    opt = make(x)
    opt.step(arm)
    twin = copy.deepcopy(opt)
    with pytest.raises(ValueError, match=match):
        opt.step(closure(x))
    assert torch.equal(x, twin.mean)
    opt.step(arm)
    twin.step(arm)
    assert as_dict(opt.archive) == as_dict(twin.archive)


# ------------------------------------------------------- the contract extension
@pytest.mark.parametrize("name", ["ga", "snes", "pgpe", "cmaes"])
def test_algorithms_without_descriptors_refuse_them_and_keep_their_state(name):
    x = torch.zeros(D, dtype=torch.float64)
    opt = evoopt.OPTIMIZERS[name]([x], sigma=0.3, popsize=16, seed=0)
    opt.step(lambda pop: arm_batched(pop)[0])
    pop = opt.ask()
    losses, desc = arm_batched(pop)
    cls = type(opt).__name__
    with pytest.raises(ValueError, match=rf"Invalid descriptors: {cls} takes no behaviour "
                       r"descriptors \(got Tensor\); only a quality-diversity algorithm"):
        opt.tell(losses, descriptors=desc)
    opt.tell(losses)  # still pending: the losses alone go through
    twin = copy.deepcopy(opt)
    with pytest.raises(ValueError, match=f"{cls} takes no behaviour descriptors"):
        opt.step(arm_batched)
    with pytest.raises(ValueError, match=f"{cls} takes no behaviour descriptors"):
        opt.step(lambda: arm_member(x.tolist()))
    assert torch.equal(x, twin.mean)
    assert float(opt.step(lambda pop: arm_batched(pop)[0])) == float(
        twin.step(lambda pop: arm_batched(pop)[0]))


def test_a_pair_of_numbers_is_two_losses_not_losses_and_descriptors():
    x = torch.zeros(1, dtype=torch.float64)
    opt = evoopt.GA([x], popsize=2, seed=0)
    assert float(opt.step(lambda pop: (1.0, 3.0))) == 2.0
    assert float(opt.step(lambda pop: (torch.tensor(1.0), torch.tensor(5.0)))) == 3.0


# ------------------------------------------------------------------ checkpoints
def test_resume_reproduces_the_archive_exactly():
    x = torch.zeros(D, dtype=torch.float64)
    opt = make(x, line_sigma=0.2)
    for _ in range(4):
        opt.step(arm)
    ckpt = roundtrip(opt.state_dict())  # torch.load(weights_only=True)
    later = []
    for _ in range(4):
        opt.step(arm)
        later.append(as_dict(opt.archive))
    y = torch.zeros(D, dtype=torch.float64)
    again = make(y, line_sigma=0.2, seed=99)
    again.load_state_dict(ckpt)
    for expected in later:
        again.step(arm)
        assert as_dict(again.archive) == expected
    assert torch.equal(x, y)


def _corrupt(key, value):
    def f(sd):
        sd["state"]["population"][key] = value(sd["state"]["population"][key])
    return f


def _setting(key, value):
    def f(sd):
        sd["evoopt"][key] = value
    return f


BAD_CHECKPOINTS = [
    (_setting("cells", (4, 4)), r"saved cells=\(4, 4\), this optimizer has cells=\(5, 4\)"),
    (_setting("descriptor_bounds", ((0.0, 1.0),) * 2), "saved descriptor_bounds="),
    (_setting("line_sigma", 0.5), "saved line_sigma=0.5"),
    # (the base's checks word it when the optimizer has run, MAPElites' own when it is fresh)
    (_corrupt("solutions", lambda v: v[:-1]), r"saved solutions (has|is Tensor of) shape "
     r"\(19, 6\), expected (a tensor of shape )?\(20, 6\)"),
    (_corrupt("descriptors", lambda v: v[:, :1]), r"saved descriptors (has|is Tensor of) shape "
     r"\(20, 1\), expected (a tensor of shape )?\(20, 2\)"),
    (_corrupt("filled", lambda v: v.to(torch.int64)),
     r"saved (filled has dtype|'state'\['population'\]\['filled'\] is Tensor) torch.int64"),
    (_corrupt("fitness", lambda v: v.index_fill(0, torch.tensor([0]), math.nan)),
     r"saved ('state'\['population'\]\['fitness'\] has NaN or infinite entries|fitness is "
     r"not finite)"),
    (_corrupt("filled", lambda v: torch.zeros_like(v)), "saved initialized=True disagrees"),
]


@pytest.mark.parametrize("fresh", [False, True], ids=["running", "fresh"])
@pytest.mark.parametrize("bad", range(len(BAD_CHECKPOINTS)))
def test_a_checkpoint_that_does_not_fit_is_refused_and_nothing_changes(bad, fresh):
    corrupt, match = BAD_CHECKPOINTS[bad]
    source = make(torch.zeros(D, dtype=torch.float64))
    source.step(arm)
    sd = roundtrip(source.state_dict())
    corrupt(sd)
    x = torch.zeros(D, dtype=torch.float64)
    target = make(x, seed=5)
    if not fresh:
        target.step(arm)
    before = roundtrip(target.state_dict())
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(sd)
    torch.testing.assert_close(target.state_dict()["state"], before["state"], rtol=0, atol=0)


# --------------------------------------------------------------------- maximize
def test_maximize_reports_values_and_the_qd_score_in_the_user_s_sign():
    runs = []
    for maximize, sign, offset in ((False, 1.0, 2.0), (True, -1.0, -2.0)):
        x = torch.zeros(D, dtype=torch.float64)
        opt = make(x, maximize=maximize, qd_offset=offset)
        for _ in range(5):
            opt.step(lambda pop: (sign * arm(pop)[0], arm(pop)[1]))
        runs.append((opt.archive, x.clone()))
    (a, xa), (b, xb) = runs
    assert torch.equal(a.solutions, b.solutions) and torch.equal(xa, xb)
    assert torch.equal(a.losses, -b.losses)
    assert a.qd_score == b.qd_score > 0  # sum(2 - f) and sum(value - (-2)) alike


def test_sphere_center_is_the_best_elite_and_improves():
    x = torch.full((D,), 0.8, dtype=torch.float64)
    opt = make(x, sigma=0.05, descriptor=lambda pop: pop.flat[:, :2])
    start = float(sphere(x))
    for _ in range(50):
        opt.step(lambda pop: sphere(pop.flat))
        a = opt.archive
        assert torch.equal(x, a.solutions[torch.argmin(a.losses)])
    assert float(sphere(x)) < 0.2 * start


def test_members_whose_closure_raises_stay_out_of_the_archive():
    x = torch.zeros(D, dtype=torch.float64)
    opt = make(x)
    opt.step(arm)

    def closure():  # the simulator fails for some members: they rank worst, the rest count
        if x[0] > 0.2:
            raise RuntimeError("the simulator crashed")
        return arm_member(x.tolist())

    before = as_dict(opt.archive)
    with (pytest.warns(RuntimeWarning, match="the closure raised for some members"),
          pytest.warns(RuntimeWarning, match="of 16 losses are NaN or infinite")):
        opt.step(closure)
    assert opt.last.num_nonfinite > 0
    new = [e for c, e in as_dict(opt.archive).items() if before.get(c) != e]
    assert new and all(x[0] <= 0.2 for x, _, _ in new)


def test_a_descriptor_function_that_raises_fails_the_step_and_changes_nothing():
    x = torch.zeros(D, dtype=torch.float64)
    calls = []

    def descriptor(pop):
        calls.append(1)
        if len(calls) == 2:
            raise ZeroDivisionError("descriptor broke")
        return arm_batched(pop)[1]

    opt = make(x, descriptor=descriptor)
    opt.step(_arm_losses)
    twin = copy.deepcopy(opt)
    with pytest.raises(ZeroDivisionError, match="descriptor broke"):
        opt.step(_arm_losses)
    assert opt.generation == 1 and torch.equal(x, twin.mean)
    opt.step(_arm_losses)
    twin.step(_arm_losses)
    assert as_dict(opt.archive) == as_dict(twin.archive)


# ----------------------------------------------------------------------- fuzzing
_SPECIAL = [math.nan, math.inf, -math.inf, 1e300, -1e300, 5e-324, 0.0, -0.0, 1.0, -1.0, 0.999]


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.lists(st.sampled_from(_SPECIAL), min_size=32, max_size=32),
       st.lists(st.sampled_from(_SPECIAL), min_size=16, max_size=16))
def test_any_descriptors_either_raise_and_keep_the_state_or_keep_the_archive_sound(desc, loss):
    x = torch.zeros(D, dtype=torch.float64)
    opt = make(x)
    opt.step(arm)
    before = roundtrip(opt.state_dict())
    opt.ask()
    descriptors = torch.tensor(desc, dtype=torch.float64).reshape(16, 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.tell(torch.tensor(loss, dtype=torch.float64), descriptors=descriptors)
    except ValueError as e:
        assert re.match("Invalid descriptors|all 16 losses", str(e))
        torch.testing.assert_close(opt.state_dict()["state"], before["state"], rtol=0, atol=0)
        return
    a = opt.archive
    assert torch.isfinite(a.losses).all() and torch.isfinite(a.descriptors).all()
    assert torch.equal(opt.cell_index(a.descriptors), a.cells)
    best = a.losses == a.losses.min()  # the center: a best elite (ties keep the older one)
    assert any(torch.equal(x, s) for s in a.solutions[best])
