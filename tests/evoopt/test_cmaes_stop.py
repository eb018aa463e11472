"""evoopt.CMAES once pycma has stopped: the center stays, one warning, ``opt.stopped`` holds
pycma's reasons (also across checkpoints), further ``step``/``ask`` calls raise and change
nothing; and an exactly flat generation leaves the distribution where it was."""

import warnings

import numpy as np
import pytest
import torch

import evoopt
from evoopt.algorithms.cmaes import _QUIET

from ._helpers import roundtrip, sphere

cma = pytest.importorskip("cma")


def noisy_line(seed=0, n=256):
    """Issue 12's report: Linear(1, 1) on y = 2x + 1 + noise through vmap_objective."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=g)
    y = 2 * x + 1 + 0.1 * torch.randn(n, 1, generator=g)
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(0.0)
        model.bias.fill_(0.0)
    return model, evoopt.vmap_objective(model, torch.nn.functional.mse_loss, x, y)


def test_noisy_line_stops_once_and_keeps_the_center_for_3000_generations():
    """Regression: pycma stopped (tolfun, ...) near generation 500 but the optimizer went on
    stepping and the weight reached 3.4e17 (loss 3.8e36) by generation 3000, no warning."""
    model, objective = noisy_line()
    opt = evoopt.CMAES(model.parameters(), sigma=0.5, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while not opt.stopped and opt.generation < 3000:  # how a loop ends a CMA-ES run
            loss = float(opt.step(objective))
    stops = [w for w in caught if "CMAES stopped" in str(w.message)]
    assert len(stops) == 1 and stops[0].category is RuntimeWarning
    assert stops[0].filename == __file__  # points at the caller's step, not at evoopt
    assert opt.stopped and all(isinstance(k, str) for k in opt.stopped)
    assert opt.generation < 3000 and opt.num_evals == opt.generation * opt.popsize
    assert abs(model.weight.item() - 2.0) < 0.05 and abs(model.bias.item() - 1.0) < 0.05
    assert loss < 0.02
    center = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.equal(center, opt.mean)
    for _ in range(3):  # a loop that goes on steps nowhere (as torch's LBFGS once converged)
        assert float(opt.step(objective)) == opt.last.mean_loss
    assert opt.generation < 3000
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in model.parameters()]), center)


def test_after_the_stop_step_is_a_no_op_and_ask_raises():
    x = torch.nn.Parameter(torch.full((4,), 1.0, dtype=torch.float64))
    opt = evoopt.CMAES([x], sigma=0.5, seed=0, options={"ftarget": 1e-6})
    with pytest.warns(RuntimeWarning, match=r"CMAES stopped at generation \d+: .*'ftarget'"):
        while not opt.stopped:
            opt.step(lambda pop: sphere(pop.flat))
    assert opt.stopped == {"ftarget": 1e-6}
    calls, before = [], (x.detach().clone(), opt.generation, opt.num_evals, opt.sigma)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        for closure in (lambda pop: calls.append(1) or sphere(pop.flat),
                        lambda: calls.append(1) or sphere(x)):  # as torch's LBFGS once converged
            assert float(opt.step(closure)) == opt.last.mean_loss
        with pytest.raises(RuntimeError,
                           match=r"CMAES has stopped \(pycma's termination .*ftarget.*"
                                 "end the loop when opt.stopped is non-empty"):
            opt.ask()
    assert calls == [] and torch.equal(x.detach(), before[0])
    assert (opt.generation, opt.num_evals, opt.sigma) == before[1:]
    with pytest.raises(RuntimeError, match="without a pending ask"):
        opt.tell(torch.zeros(opt.popsize))


def test_user_level_stops_end_the_search_even_with_restarts_left():
    """As pycma's fmin: ftarget / maxfevals / callback end the search, restarts or not."""
    x = torch.nn.Parameter(torch.full((4,), 1.0, dtype=torch.float64))
    opt = evoopt.CMAES([x], sigma=0.5, seed=0, restarts=3,
                       options={"ftarget": 1e-6, "tolfun": 1e-3})
    with pytest.warns(RuntimeWarning, match="no restart is left"):
        while not opt.stopped:
            opt.step(lambda pop: sphere(pop.flat))
    assert "ftarget" in opt.stopped and opt.num_restarts == 0


@pytest.mark.parametrize("strategy", ["ipop", "bipop"])
def test_restarts_used_up_then_stopped(strategy):
    x = torch.nn.Parameter(torch.full((4,), 2.0, dtype=torch.float64))
    opt = evoopt.CMAES([x], sigma=1.0, seed=0, restarts=2, restart_strategy=strategy,
                       options={"tolfun": 1e-3, "tolfunhist": 1e-3, "tolx": 1e-3})
    with pytest.warns(RuntimeWarning, match="and no restart is left"):
        while not opt.stopped and opt.generation < 3000:
            assert opt.num_restarts <= 2 + 4  # bipop's small runs come on top
            opt.step(lambda pop: sphere(pop.flat))
    assert opt.stopped == opt.stop_conditions
    st = opt.state["population"]
    assert st["runs"] - st["runs_with_small"] == 2  # the large-population restarts
    if strategy == "ipop":
        assert opt.num_restarts == 2 and opt.popsize == 4 * cma_popsize(4)


def cma_popsize(D):
    return evoopt.algorithms.cmaes.cmaes_default_popsize(D)


def _stopped_opt():
    x = torch.nn.Parameter(torch.full((4,), 1.0, dtype=torch.float64))
    opt = evoopt.CMAES([x], sigma=0.5, seed=3, options={"tolfun": 1e-6})
    ckpts = []
    with pytest.warns(RuntimeWarning, match="CMAES stopped"):
        while not opt.stopped:
            ckpts.append(roundtrip(opt.state_dict()))
            opt.step(lambda pop: sphere(pop.flat))
    return x, opt, ckpts


def test_stopped_survives_a_checkpoint_and_an_earlier_checkpoint_resumes_the_search():
    x, opt, ckpts = _stopped_opt()
    final = roundtrip(opt.state_dict())
    y = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    resumed = evoopt.CMAES([y], sigma=0.5, seed=9, options={"tolfun": 1e-6})
    resumed.load_state_dict(final)
    assert resumed.stopped == opt.stopped and torch.equal(y.detach(), x.detach())
    with pytest.raises(RuntimeError, match="CMAES has stopped"):
        resumed.ask()
    resumed.step(lambda pop: sphere(pop.flat))  # a no-op
    assert torch.equal(y.detach(), x.detach()) and resumed.generation == opt.generation
    # the stopped optimizer takes back a checkpoint from before the stop and replays it
    opt.load_state_dict(ckpts[-3])
    assert opt.stopped == {}
    with pytest.warns(RuntimeWarning, match="CMAES stopped"):
        for _ in range(3):
            opt.step(lambda pop: sphere(pop.flat))
    assert opt.stopped == resumed.stopped and torch.equal(x.detach(), y.detach())


def test_malformed_stop_state_is_refused():
    _, opt, _ = _stopped_opt()
    ckpt = roundtrip(opt.state_dict())
    ckpt["state"]["population"]["stopped"] = [1.0]
    fresh = evoopt.CMAES([torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))])
    with pytest.raises(ValueError, match=r"saved stopped=\[1.0\] is malformed"):
        fresh.load_state_dict(ckpt)
    with pytest.raises(ValueError, match=r"saved 'state'\['population'\]\['stopped'\] is list"):
        opt.load_state_dict(ckpt)  # one that has run compares with its own state first
    assert opt.stopped and not fresh.stopped  # both as they were


@pytest.mark.parametrize("diagonal", [False, True])
def test_current_sigma_is_the_rms_of_the_sampled_coordinates_stds(diagonal):
    x = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = evoopt.CMAES([{"params": [x]}, {"params": [b], "sigma": 0.5}], sigma=1.0, seed=0,
                       diagonal=diagonal)
    expected = np.sqrt(np.mean([1.0] * 3 + [0.25] * 2))
    assert opt.current_sigma == pytest.approx(expected, rel=1e-4)  # pycma: C_ii = 1 + 2e-5 i
    for _ in range(30):
        opt.step(lambda pop: (pop.flat * torch.arange(1.0, 6.0, dtype=torch.float64)).square()
                 .sum(1))
    # against the spread of many members sampled from the same state (same generator)
    es = opt.es
    stds = es.sigma * es.sigma_vec.scaling * np.sqrt(es.dC)
    assert opt.current_sigma == pytest.approx(float(np.sqrt(np.mean(stds**2))), rel=1e-12)
    members = np.array(es.ask(4000))
    measured = float(np.sqrt(np.mean(members.std(0) ** 2)))
    assert opt.current_sigma == pytest.approx(measured, rel=0.05)
    opt.param_groups[0]["sigma"] = 0.5  # a schedule halves sigma: the next generation's width
    opt.param_groups[1]["sigma"] = 0.25
    assert opt.current_sigma == pytest.approx(float(np.sqrt(np.mean(stds**2))) / 2, rel=1e-12)


# ------------------------------------------------------------------ exact plateaus
KEEP_GOING = {"tolfun": 0, "tolfunhist": 0, "tolflatfitness": 10**9, "tolstagnation": 0}


@pytest.mark.parametrize("diagonal", [False, True])
def test_an_exact_plateau_leaves_the_distribution_where_it_was(diagonal):
    """Regression: 20 generations of all-equal losses moved the center by 0.55 (pycma ranks
    ties by member index, so the mean took random steps)."""
    x = torch.nn.Parameter(torch.full((5,), 0.5, dtype=torch.float64))
    opt = evoopt.CMAES([x], sigma=0.3, seed=0, diagonal=diagonal, options=KEEP_GOING)
    for _ in range(3):  # some learning first: paths, covariance and step size are not trivial
        opt.step(lambda pop: sphere(pop.flat))
    es = opt.es
    before = (x.detach().clone(), es.sigma, es.sm.variances.copy(), es.pc.copy(),
              es.adapt_sigma.ps.copy(), es.sigma_vec.scaling.copy())
    firsts = []
    for _ in range(20):
        pop = opt.ask()
        firsts.append(pop.flat[0].clone())
        opt.tell(torch.full((len(pop),), 7.0))
    assert torch.equal(x.detach(), before[0]) and opt.es.sigma == before[1]
    for got, want in zip((es.sm.variances, es.pc, es.adapt_sigma.ps, es.sigma_vec.scaling),
                         before[2:]):
        np.testing.assert_array_equal(got, want)
    assert opt.generation == 23 and opt.num_evals == es.countevals == 23 * opt.popsize
    assert len({tuple(f.tolist()) for f in firsts}) == 20  # fresh members every generation
    assert not opt.stopped
    for _ in range(150):  # and the search goes on from there
        opt.step(lambda pop: sphere(pop.flat))
    assert float(sphere(x.detach())) < 1e-10


def test_an_exact_plateau_with_pycmas_defaults_stops_at_once_without_moving():
    x = torch.nn.Parameter(torch.full((5,), 0.5, dtype=torch.float64))
    opt = evoopt.CMAES([x], sigma=0.3, seed=0)
    with pytest.warns(RuntimeWarning, match="CMAES stopped at generation 1: .*'tolfun'"):
        while not opt.stopped and opt.generation < 20:
            opt.step(lambda pop: torch.ones(len(pop)))
    assert "tolfun" in opt.stopped and opt.generation == 1
    assert torch.equal(x.detach(), torch.full((5,), 0.5, dtype=torch.float64))


def test_a_generation_with_distinct_losses_still_moves_as_pycma():
    """The plateau rule only acts when every loss is equal: one distinct value and pycma's
    update runs as usual (ties among the others ranked by member index, as pycma does)."""
    x = torch.nn.Parameter(torch.full((5,), 0.5, dtype=torch.float64))
    opt = evoopt.CMAES([x], sigma=0.3, seed=0)
    pop = opt.ask()
    losses = torch.ones(len(pop))
    losses[3] = 0.0
    opt.tell(losses)
    g = torch.Generator().manual_seed(0)  # pycma driven directly, same sampler
    es = cma.CMAEvolutionStrategy(np.full(5, 0.5), 0.3, dict(
        _QUIET, randn=lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).numpy()))
    es.tell(es.ask(), losses.double().numpy())
    np.testing.assert_array_equal(x.detach().numpy(), es.mean)
    assert not np.array_equal(es.mean, np.full(5, 0.5))
