"""The PopulationOptimizer base class, with a minimal test-local algorithm (elitist random
search), so these checks do not depend on any registered algorithm."""

import math
import pickle
import warnings

import numpy as np
import pytest
import torch

from evoopt.population import ParamLayout, PopulationOptimizer, is_population_objective

from ._helpers import roundtrip as _roundtrip


class EliteRS(PopulationOptimizer):
    """mean <- best member; noise sigma * N(0, I). Just enough algorithm to test the base."""

    def __init__(self, params, popsize=8, sigma=0.1, maximize=False, seed=None):
        super().__init__(params, dict(sigma=sigma), popsize=popsize, maximize=maximize, seed=seed)

    def _init_state(self, st, mean):
        pass

    def _sample(self, st, gen):
        eps = self._randn(self.popsize, self.num_params)
        return st["mean"] + self.group_values("sigma") * eps, eps

    def _update(self, st, u, rows, eps):
        st["mean"] = st["mean"] + self.group_values("sigma") * eps[torch.argmin(u)]


def _quadratic_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, generator=g)
    return x, x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3


def test_layout_flatten_unflatten_and_load_in_place():
    m = _quadratic_model()
    layout = ParamLayout(list(m.parameters()))
    flat = layout.flatten()
    assert flat.shape == (sum(p.numel() for p in m.parameters()),)
    views = layout.unflatten(torch.stack([flat, 2 * flat]))
    for p, v in zip(m.parameters(), views):
        assert v.shape == (2, *p.shape)
        torch.testing.assert_close(v[1], 2 * p.detach())
    ptrs = [p.data_ptr() for p in m.parameters()]
    layout.load_(torch.zeros_like(flat))
    assert [p.data_ptr() for p in m.parameters()] == ptrs  # copied, not rebound
    assert all(float(p.detach().abs().sum()) == 0 for p in m.parameters())


def test_closure_and_population_objective_give_the_same_step():
    x, y = _data()
    results = []
    for mode in ("closure", "objective"):
        m = _quadratic_model()
        opt = EliteRS(m.parameters(), seed=3)

        def closure():
            opt.zero_grad()
            loss = ((m(x).squeeze(-1) - y) ** 2).mean()
            if torch.is_grad_enabled():
                loss.backward()
            return loss

        def objective(pop):
            out = []
            for i in range(len(pop)):
                w1, b1, w2, b2 = pop.member(i)
                out.append((((x @ w1.T + b1) @ w2.T + b2).squeeze(-1) - y).pow(2).mean())
            return torch.stack(out)

        losses = [float(opt.step(closure if mode == "closure" else objective)) for _ in range(5)]
        results.append((losses, opt.mean.clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1])


def test_step_returns_mean_loss_and_params_hold_the_center():
    x, y = _data()
    m = _quadratic_model()
    opt = EliteRS(m.parameters(), seed=0)
    seen = []

    def closure():
        loss = ((m(x).squeeze(-1) - y) ** 2).mean()
        seen.append(float(loss))
        return loss

    loss = opt.step(closure)
    assert loss.dim() == 0
    assert float(loss) == pytest.approx(sum(seen) / len(seen))
    torch.testing.assert_close(torch.cat([p.detach().flatten() for p in m.parameters()]), opt.mean)
    assert opt.last.losses.tolist() == pytest.approx(seen)
    assert opt.best_loss == pytest.approx(min(seen))
    assert opt.num_evals == 8 and opt.generation == 1


def test_is_population_objective_detection():
    assert not is_population_objective(lambda: 1.0)
    assert is_population_objective(lambda pop: pop)

    def flagged():
        return 0

    flagged.is_population_objective = True
    assert is_population_objective(flagged)


def test_nonfinite_losses_rank_worst_with_warning_and_all_nan_leaves_state():
    m = _quadratic_model()
    opt = EliteRS(m.parameters(), seed=0)
    pop = opt.ask()
    losses = torch.arange(8.0)
    losses[0] = math.nan  # would be the best
    losses[1] = -math.inf  # "better" than everything: must still rank worst
    with pytest.warns(RuntimeWarning, match="2 of 8 losses are NaN or infinite"):
        opt.tell(losses)
    torch.testing.assert_close(opt.mean, pop.flat[2])  # the best finite member won

    before = opt.state_dict()
    opt.ask()
    with pytest.raises(ValueError,
                       match="all 8 losses .* NaN or infinite; the optimizer's state is unchanged"):
        opt.tell(torch.full((8,), math.nan))
    after = opt.state_dict()
    torch.testing.assert_close(before["state"]["population"]["mean"],
                               after["state"]["population"]["mean"])
    assert after["state"]["population"]["generation"] == before["state"]["population"]["generation"]


def test_a_member_whose_closure_raises_ranks_worst():
    m = _quadratic_model()
    opt = EliteRS(m.parameters(), seed=0)
    calls = iter(range(100))

    def closure():
        if next(calls) == 0:
            raise RuntimeError("simulator crashed")
        return sum(p.sum() for p in m.parameters()) ** 2

    with pytest.warns(RuntimeWarning, match="simulator crashed"):
        opt.step(closure)
    assert math.isnan(float(opt.last.losses[0])) and opt.last.num_nonfinite == 1

    def always_fails():
        raise RuntimeError("broken objective")

    with pytest.raises(RuntimeError, match="broken objective"):
        opt.step(always_fails)


@pytest.mark.parametrize(
    "losses, match",
    [
        (torch.zeros(7), r"Invalid losses: shape \(7,\) \(expected \(8,\)"),
        (torch.zeros(8, 2), r"Invalid losses: shape \(8, 2\)"),
        ("abc", "Invalid losses"),
    ],
)
def test_tell_rejects_bad_losses(losses, match):
    opt = EliteRS(_quadratic_model().parameters(), seed=0)
    opt.ask()
    with pytest.raises(ValueError, match=match):
        opt.tell(losses)


def test_tell_without_ask_and_step_without_closure():
    opt = EliteRS(_quadratic_model().parameters(), seed=0)
    with pytest.raises(RuntimeError, match="without a pending ask"):
        opt.tell(torch.zeros(8))
    with pytest.raises(ValueError, match="needs a closure"):
        opt.step()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(popsize=0), "Invalid popsize: 0"),
        (dict(popsize=2.5), "Invalid popsize: 2.5"),
        (dict(seed=-1), "Invalid seed: -1"),
        (dict(maximize="yes"), "Invalid maximize: 'yes'"),
    ],
)
def test_base_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EliteRS(_quadratic_model().parameters(), **kwargs)


def test_parameter_errors():
    with pytest.raises(ValueError, match="empty parameter list"):
        EliteRS([])
    with pytest.raises(ValueError, match="expected all parameters on one device with one dtype"):
        EliteRS([torch.zeros(2), torch.zeros(2, dtype=torch.float64)])
    with pytest.raises(ValueError, match="expected a floating point dtype"):
        EliteRS([torch.zeros(2, dtype=torch.int64)])


def test_groups_have_their_own_sigma_and_names_come_from_named_parameters():
    m = _quadratic_model()
    opt = EliteRS([{"params": m[0].parameters(), "sigma": 1.0},
                   {"params": m[1].parameters(), "sigma": 0.0}], seed=0)
    pop = opt.ask()
    n0 = sum(p.numel() for p in m[0].parameters())
    assert float((pop.flat[:, :n0] - opt.mean[:n0]).abs().max()) > 0.1
    assert float((pop.flat[:, n0:] - opt.mean[n0:]).abs().max()) == 0.0
    named = EliteRS(m.named_parameters(), seed=0)
    assert list(named.ask().params()) == ["0.weight", "0.bias", "1.weight", "1.bias"]


def test_add_param_group_before_first_step_only():
    m = _quadratic_model()
    opt = EliteRS(m[0].parameters(), seed=0)
    opt.add_param_group({"params": m[1].parameters()})
    assert opt.num_params == sum(p.numel() for p in m.parameters())
    opt.step(lambda: m(torch.ones(1, 3)).sum())
    with pytest.raises(ValueError, match="cannot add a param group after the first generation"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))]})



def test_state_dict_refuses_other_optimizer_and_other_shapes():
    m = _quadratic_model()
    opt = EliteRS(m.parameters(), seed=0)
    opt.step(lambda: m(torch.ones(1, 3)).sum())
    sd = _roundtrip(opt.state_dict())
    other = EliteRS(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)).parameters())
    with pytest.raises(ValueError, match="parameter shapes differ"):
        other.load_state_dict(sd)
    with pytest.raises(ValueError, match="saved popsize=8, this optimizer has popsize=4"):
        EliteRS(_quadratic_model().parameters(), popsize=4).load_state_dict(sd)
    with pytest.raises(ValueError, match="not saved by an evoopt population optimizer"):
        EliteRS(_quadratic_model().parameters()).load_state_dict(
            torch.optim.SGD(m.parameters(), lr=0.1).state_dict())
    sd["evoopt"]["optimizer"] = "PGPE"
    with pytest.raises(ValueError, match="saved by 'PGPE', not 'EliteRS'"):
        EliteRS(_quadratic_model().parameters()).load_state_dict(sd)


def test_global_rngs_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    m = _quadratic_model(seed=5)
    torch.manual_seed(123)
    opt = EliteRS(m.parameters())  # seed=None draws from the OS, not from torch
    for _ in range(3):
        opt.step(lambda: m(torch.ones(1, 3)).sum())
    torch.testing.assert_close(torch.rand(3), expected)


def test_nonfinite_warning_message_count_and_no_warning_when_clean():
    opt = EliteRS(_quadratic_model().parameters(), seed=0)
    opt.ask()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.tell(torch.arange(8.0))


def test_refused_param_group_leaves_the_optimizer_as_it_was():
    x = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = EliteRS([x], sigma=0.1)
    with pytest.raises(ValueError, match="expected all parameters on one device with one dtype"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "sigma": 0.5})
    assert len(opt.param_groups) == 1 and opt.num_params == 3
    assert opt.group_values("sigma") == 0.1


def test_cmaes_gets_float64_losses_from_float32_parameters():
    import evoopt

    x = torch.nn.Parameter(torch.zeros(4))
    opt = evoopt.CMAES([x], sigma=0.1, seed=0)
    seen = []
    update = opt._update
    opt._update = lambda st, u, rows, aux: (seen.append(u), update(st, u, rows, aux))
    pop = opt.ask()
    opt.tell(1e4 + 1e-4 * torch.arange(len(pop), dtype=torch.float64))  # ties in float32
    assert seen[0].dtype == np.float64 and len(set(seen[0].tolist())) == len(pop)  # numpy_update


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_load_copies_into_one_parameter_of_any_layout_and_dtype(dtype):
    base = torch.zeros(3, 2, dtype=dtype)
    # non-contiguous too
    for p in (torch.nn.Parameter(base.clone()), torch.nn.Parameter(base.clone().t())):
        layout = ParamLayout([p])
        flat = torch.arange(6, dtype=dtype)
        layout.load_(flat)
        assert torch.equal(p.detach().reshape(-1), flat)
        opt = EliteRS([p], seed=0)
        opt.step(lambda: p.float().sum())
        assert torch.equal(p.detach().reshape(-1), opt.mean) and opt.best.dtype == dtype


def test_load_keeps_following_a_parameter_or_source_whose_storage_changes():
    """load_ keeps numpy views between calls (issue 12's CMA-ES overhead); they must
    follow ``p.data = ...``, an in-place change of the source, and ``set_``."""
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    layout = ParamLayout([p])
    flat = torch.arange(4, dtype=torch.float64)
    layout.load_(flat)
    assert torch.equal(p.detach(), flat)
    p.data = torch.zeros(4, dtype=torch.float64)  # new storage
    flat.mul_(2)  # the same source, changed in place
    layout.load_(flat)
    assert torch.equal(p.detach(), torch.arange(4, dtype=torch.float64) * 2)
    flat.set_(torch.full((4,), 7.0, dtype=torch.float64))  # the source's storage swapped
    layout.load_(flat)
    assert torch.equal(p.detach(), torch.full((4,), 7.0, dtype=torch.float64))
    p.data = torch.zeros(4, dtype=torch.float32)  # another dtype: the torch copy casts
    layout.load_(flat)
    assert p.dtype == torch.float32 and torch.equal(p.detach(), torch.full((4,), 7.0))
    twin = pickle.loads(pickle.dumps(layout))  # the copy holds no views of the original
    (q,) = twin.params
    twin.load_(torch.ones(4, dtype=torch.float32))
    assert torch.equal(q.detach(), torch.ones(4)) and torch.equal(p.detach(), torch.full((4,), 7.0))
