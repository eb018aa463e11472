"""Tasks: the batched population objective equals the per-member loss, seeds fix the
initial parameters without touching the global RNG, gradient paths of the
non-differentiable tasks are exact zeros, and the test functions have their optima."""

import math

import pytest
import torch

from evoopt.population import ParamLayout, Population
from evoopt.tasks import FUNCTIONS, TASKS, FunctionTask, Task, get_task, params_hash
from evoopt.tasks.functions import (
    STYBLINSKI_TANG_ARGMIN,
    ackley,
    levy,
    rastrigin,
    rosenbrock,
    sphere,
    styblinski_tang,
)

SUPERVISED = ["line", "digits", "digits01", "quantized"]


def _population(model, popsize=8, scale=0.3, seed=0):
    layout = ParamLayout(list(model.parameters()))
    gen = torch.Generator().manual_seed(seed)
    center = layout.flatten()
    noise = torch.randn(popsize, layout.num_params, generator=gen, dtype=center.dtype)
    return Population(center + scale * noise, layout)


@pytest.mark.parametrize("name", SUPERVISED + ["rastrigin", "rosenbrock", "levy"])
def test_population_objective_equals_per_member_loss(name):
    task = get_task(name) if name in SUPERVISED else get_task(name, dim=5)
    model = task.make_model(3)
    pop = _population(model)
    batched = task.population_objective(model)(pop)
    assert batched.shape == (8,)
    per_member = []
    for i in range(8):
        pop.layout.load_(pop.flat[i])
        with torch.no_grad():
            per_member.append(float(task.loss(model)))
    torch.testing.assert_close(batched.double(), torch.tensor(per_member, dtype=torch.float64),
                               rtol=1e-5, atol=1e-6)
    # the members differ, so the check is not vacuous
    assert len({round(v, 6) for v in per_member}) > 1


@pytest.mark.parametrize("name", SUPERVISED + ["sphere"])
def test_make_model_is_a_function_of_the_seed_and_leaves_global_rng_alone(name):
    task = get_task(name)
    state = torch.random.get_rng_state()
    a, b, c = task.make_model(0), task.make_model(0), task.make_model(1)
    assert torch.equal(state, torch.random.get_rng_state())
    assert params_hash(a) == params_hash(b) != params_hash(c)


def test_line_data_follow_the_line_and_depend_only_on_data_seed():
    t1, t2, t3 = get_task("line"), get_task("line"), get_task("line", data_seed=1)
    assert torch.equal(t1.y, t2.y) and not torch.equal(t1.y, t3.y)
    # least squares on the noisy data is close to slope 2, intercept 1
    A = torch.cat([t1.x, torch.ones_like(t1.x)], 1)
    sol = torch.linalg.lstsq(A, t1.y).solution.flatten()
    assert abs(float(sol[0]) - 2) < 0.15 and abs(float(sol[1]) - 1) < 0.1
    model = t1.make_model(0)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.bias.fill_(1.0)
    assert t1.metrics(model)["test_mse"] == pytest.approx(0.0, abs=1e-10)


def test_digits_split_is_fixed_standardised_and_stratified():
    task = get_task("digits")
    x, _, xt, yt = task.data
    assert x.shape == (1347, 64) and xt.shape == (450, 64)
    assert float(x.mean(0).abs().max()) < 1e-5
    assert int(torch.bincount(yt).min()) >= 43  # 25% of each class (43 to 46)
    x2 = get_task("digits").data[0]
    assert torch.equal(x, x2)


def test_digits01_loss_is_the_zero_one_error_and_adam_gets_zero_gradients():
    task = get_task("digits01")
    model = task.make_model(0)
    m = task.metrics(model)
    with torch.no_grad():
        assert float(task.loss(model)) == pytest.approx(1 - m["train_accuracy"], abs=1e-6)
    before = params_hash(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    closure = task.closure(model, opt)
    for _ in range(3):
        opt.step(closure)
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters())
    assert params_hash(model) == before  # Adam moves nowhere on a zero gradient


def test_quantized_network_is_ternary_and_backprop_gives_exact_zeros():
    task = get_task("quantized")
    model = task.make_model(0)
    layer = model[0]
    s = layer.scale
    w = torch.round(torch.clamp(layer.weight / s, -1, 1))
    assert set(w.unique().tolist()) <= {-1.0, 0.0, 1.0}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = task.closure(model, opt)()
    assert loss.requires_grad and math.isfinite(float(loss.detach()))
    assert all(float(p.grad.abs().max()) == 0.0 for p in model.parameters())


def test_test_functions_at_their_optima_and_known_points():
    d = 6
    for name, spec in FUNCTIONS.items():
        x = torch.full((d,), spec.argmin, dtype=torch.float64)
        assert float(spec.fn(x)) == pytest.approx(0.0, abs=1e-9), name
    one = torch.ones(2, dtype=torch.float64)
    assert float(sphere(one)) == 2.0
    assert float(rosenbrock(torch.zeros(2, dtype=torch.float64))) == 1.0
    assert float(rastrigin(one)) == pytest.approx(2.0)
    assert float(ackley(torch.zeros(3, dtype=torch.float64))) == pytest.approx(0.0, abs=1e-12)
    assert float(levy(one)) == pytest.approx(0.0, abs=1e-12)
    # Styblinski-Tang: -39.16617 per coordinate before the shift
    x = torch.full((3,), STYBLINSKI_TANG_ARGMIN, dtype=torch.float64)
    assert (float(styblinski_tang(x)) - 3 * 39.16616570377142
            == pytest.approx(-117.4984971, abs=1e-6))


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_test_functions_batch_over_leading_dims(name):
    fn = FUNCTIONS[name].fn
    x = torch.randn(4, 3, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = fn(x)
    assert out.shape == (4, 3)
    assert torch.allclose(out[2, 1], fn(x[2, 1]))


def test_function_task_model_is_the_search_point_in_the_box():
    task = FunctionTask("ackley", dim=12)
    model = task.make_model(5)
    x = model().detach()
    assert x.shape == (12,) and x.dtype == torch.float64
    assert float(x.abs().max()) <= 32.768
    assert task.default_budget_evals == 12_000
    assert task.metrics(model)["f"] == pytest.approx(float(ackley(x)))


@pytest.mark.parametrize("call, match", [
    (lambda: get_task("nope"), r"Unknown task 'nope' \(expected one of: line, digits"),
    (lambda: get_task("rastrigin", dim=1), r"Invalid dim: 1 \(expected an integer >= 2\)"),
    (lambda: get_task("line", noise=-1.0), r"Invalid noise: -1.0"),
    (lambda: get_task("digits", hidden=0), r"Invalid hidden: 0"),
    (lambda: get_task("digits", test_size=1.5), r"Invalid test_size: 1.5"),
    (lambda: get_task("line", colour=3), r"Invalid options for task 'line'"),
    (lambda: FunctionTask("nope"), r"Invalid function: 'nope'"),
])
def test_bad_task_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_every_task_in_the_registry_builds_and_describes_itself():
    for name, factory in TASKS.items():
        task = factory()
        assert task.name == name
        assert task.describe()
        assert task.default_budget_evals >= 100


class _OnlyLoss(FunctionTask):
    """A task that gives make_model and loss only: the base class's population objective."""

    population_objective = Task.population_objective


def test_the_default_population_objective_loops_over_the_loss_and_restores_the_model():
    task = _OnlyLoss("rastrigin", dim=4)
    model = task.make_model(0)
    pop = _population(model, popsize=5)
    before = [p.detach().clone() for p in model.parameters()]
    losses = task.population_objective(model)(pop)
    expected = FunctionTask("rastrigin", dim=4).population_objective(model)(pop)
    torch.testing.assert_close(losses, expected)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_compare_runs_a_task_without_its_own_population_objective():
    from evoopt.compare import compare

    res = compare(_OnlyLoss("sphere", dim=3), ["cmaes", "adam"], seeds=[0], budget_evals=200,
                  progress=False, on_error="raise")
    cma = res.runs_of("cmaes")[0]
    assert cma.status == "ok" and cma.final_loss < 0.1 * cma.init_loss
