"""OpenAI-ES (Salimans et al. 2017): a float64 reference of the paper's update with the
authors' Adam, convergence budgets, inner optimizers, schedulers, exact resume, bad input."""

import math

import pytest
import torch

import evoopt

from ._helpers import centered_rank_reference as centered_rank
from ._helpers import rosenbrock, roundtrip, sphere

D = 10


def test_two_generations_match_a_float64_reference_with_adam():
    P, H, lr, sigma, wd, seed = 8, 4, 0.03, 0.1, 0.005, 11
    x0 = torch.linspace(-1.0, 2.0, D, dtype=torch.float64)
    x = torch.nn.Parameter(x0.clone())
    opt = evoopt.OpenAIES([x], popsize=P, lr=lr, sigma=sigma, weight_decay=wd, seed=seed)
    for _ in range(2):
        opt.step(lambda pop: rosenbrock(pop.flat))

    # reference: the paper's estimate, the authors' l2 term, torch's Adam written out
    gen = torch.Generator().manual_seed(seed)
    mean, m, v = (
        x0.clone(),
        torch.zeros(D, dtype=torch.float64),
        torch.zeros(D, dtype=torch.float64),
    )
    b1, b2, adam_eps = 0.9, 0.999, 1e-8
    for t in (1, 2):
        eps = torch.randn(H, D, generator=gen, dtype=torch.float64)
        noise = torch.cat([eps, -eps])  # members = mean + sigma * noise
        shaped = centered_rank(rosenbrock(mean + sigma * noise))
        grad = sum(shaped[i] * noise[i] for i in range(P)) / (P * sigma) + wd * mean
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad**2
        denom = v.sqrt() / math.sqrt(1 - b2**t) + adam_eps
        mean = mean - lr / (1 - b1**t) * m / denom
    torch.testing.assert_close(x.detach(), mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(opt.mean, mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        x.grad, grad, rtol=1e-12, atol=1e-14
    )  # p.grad = the applied estimate


def test_ask_returns_mirrored_pairs_around_the_center():
    x = torch.nn.Parameter(torch.arange(D, dtype=torch.float64))
    opt = evoopt.OpenAIES([x], popsize=6, sigma=0.3, seed=3)
    flat = opt.ask().flat
    eps = torch.randn(3, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(flat[:3], x.detach() + 0.3 * eps, rtol=0, atol=1e-15)
    torch.testing.assert_close(flat[3:], x.detach() - 0.3 * eps, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    "optimizer,lr,budget,threshold",
    [
        (torch.optim.Adam, 0.02, 20_000, 1e-3),
        (evoopt.ClipUp, 0.01, 20_000, 1e-2),
        (lambda groups: torch.optim.SGD(groups, momentum=0.9), 0.002, 20_000, 1e-3),
    ],
    ids=["adam", "clipup", "sgd-momentum-factory"],
)
def test_converges_on_sphere_within_budget(optimizer, lr, budget, threshold):
    x = torch.nn.Parameter(torch.full((D,), 3.0, dtype=torch.float64))
    opt = evoopt.OpenAIES([x], popsize=20, lr=lr, sigma=0.05, optimizer=optimizer, seed=0)
    while opt.num_evals < budget:
        opt.step(lambda pop: sphere(pop.flat))
    assert type(opt.inner_optimizer).__name__ in ("Adam", "ClipUp", "SGD")
    assert float(sphere(x.detach())) < threshold


def test_sgd_inner_step_is_lr_times_the_estimate_and_follows_the_outer_scheduler():
    x = torch.nn.Parameter(torch.ones(D, dtype=torch.float64))
    opt = evoopt.OpenAIES(
        [x], popsize=4, lr=0.1, sigma=0.1, weight_decay=0.0, optimizer=torch.optim.SGD, seed=0
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for lr in (0.1, 0.05, 0.025):
        before = x.detach().clone()
        opt.step(lambda pop: sphere(pop.flat))
        assert opt.inner_optimizer.param_groups[0]["lr"] == lr
        torch.testing.assert_close(x.detach(), before - lr * x.grad, rtol=0, atol=1e-15)
        sched.step()


def test_per_group_lr_and_sigma_reach_their_coordinates():
    a = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = evoopt.OpenAIES(
        [{"params": [a]}, {"params": [b], "lr": 0.2, "sigma": 0.5}],
        popsize=4,
        lr=0.1,
        sigma=0.1,
        optimizer=torch.optim.SGD,
        seed=0,
    )
    assert [g["lr"] for g in opt.inner_optimizer.param_groups] == [0.1, 0.2]
    flat = opt.ask().flat
    eps = torch.randn(2, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(
        flat[:2], torch.cat([0.1 * eps[:, :3], 0.5 * eps[:, 3:]], 1), rtol=0, atol=1e-15
    )
    opt.tell(sphere(flat))
    torch.testing.assert_close(a.detach(), -0.1 * a.grad)
    torch.testing.assert_close(b.detach(), -0.2 * b.grad)


def test_changing_sigma_between_generations_changes_the_noise_width():
    x = torch.nn.Parameter(torch.zeros(D, dtype=torch.float64))
    opt = evoopt.OpenAIES([x], popsize=4, sigma=0.1, seed=5)
    ref = torch.Generator().manual_seed(5)
    for sigma in (0.1, 0.025):
        opt.param_groups[0]["sigma"] = sigma
        pop = opt.ask()
        eps = torch.randn(2, D, generator=ref, dtype=torch.float64)
        torch.testing.assert_close((pop.flat[:2] - pop.flat[2:]) / 2, sigma * eps)
        opt.tell(sphere(pop.flat))
    opt.param_groups[0]["sigma"] = 0.0
    with pytest.raises(
        ValueError, match=r"Invalid sigma: 0.0 \(expected > 0; check the sigma schedule\)"
    ):
        opt.ask()


@pytest.mark.parametrize("optimizer", [torch.optim.Adam, evoopt.ClipUp, torch.optim.SGD])
def test_maximize_equals_minimizing_the_negated_loss(optimizer):
    runs = []
    for maximize, sign in ((False, 1.0), (True, -1.0)):
        x = torch.nn.Parameter(torch.full((D,), 0.5, dtype=torch.float64))
        opt = evoopt.OpenAIES(
            [x], popsize=8, lr=0.01, sigma=0.05, optimizer=optimizer, maximize=maximize, seed=2
        )
        for _ in range(5):
            opt.step(lambda pop, s=sign: s * rosenbrock(pop.flat))
        runs.append(x.detach().clone())
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("optimizer", [torch.optim.Adam, evoopt.ClipUp])
def test_exact_resume_with_scheduler_and_two_groups(optimizer):
    def fresh(seed):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        opt = evoopt.OpenAIES(
            [{"params": [model.weight]}, {"params": [model.bias], "lr": 0.05}],
            popsize=6,
            lr=0.02,
            sigma=0.1,
            optimizer=optimizer,
            seed=seed,
        )
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.7)
        return model, opt, sched

    def objective(pop):
        w, b = pop.tensors()
        return (w.sum((1, 2)) - 1.0) ** 2 + (b.sum(1) + 2.0) ** 2

    model, opt, sched = fresh(7)
    for _ in range(3):
        opt.step(objective)
        sched.step()
    ckpt = roundtrip({"opt": opt.state_dict(), "sched": sched.state_dict()})
    assert "inner" in ckpt["opt"]["evoopt"]
    expected = []
    for _ in range(4):
        expected.append(float(opt.step(objective)))
        sched.step()
    model2, opt2, sched2 = fresh(999)
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    for loss in expected:
        assert float(opt2.step(objective)) == loss
        sched2.step()
    assert torch.equal(model.weight, model2.weight) and torch.equal(model.bias, model2.bias)
    for p, q in zip(model.parameters(), model2.parameters()):
        for k, val in opt.inner_optimizer.state[p].items():
            assert torch.equal(val, opt2.inner_optimizer.state[q][k])


def test_checkpoint_with_another_inner_optimizer_is_refused():
    x = torch.nn.Parameter(torch.ones(D))
    opt = evoopt.OpenAIES([x], popsize=4, optimizer=torch.optim.SGD, seed=0)
    opt.step(lambda pop: sphere(pop.flat))
    other = evoopt.OpenAIES([torch.nn.Parameter(torch.ones(D))], popsize=4, seed=0)
    with pytest.raises(ValueError, match="inner optimizer is 'SGD', this optimizer's is 'Adam'"):
        other.load_state_dict(roundtrip(opt.state_dict()))


def _other_params_factory(groups):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


BAD = [
    (dict(lr=0.0), r"Invalid lr: 0.0 \(expected a finite number > 0\)"),
    (dict(sigma=-0.1), r"Invalid sigma: -0.1"),
    (
        dict(popsize=5),
        r"Invalid popsize: 5 \(expected an even integer, mirrored sampling draws pairs\)",
    ),
    (dict(weight_decay=-1e-3), r"Invalid weight_decay: -0.001 \(expected a finite number >= 0\)"),
    (dict(shaping="rank"), r"Invalid shaping: 'rank' \(expected one of"),
    (dict(optimizer="adam"), r"Invalid optimizer: 'adam' \(expected a torch.optim.Optimizer class"),
    (dict(optimizer=evoopt.PGPE), r"Invalid optimizer: .*not a population optimizer"),
    (dict(optimizer=lambda groups: None), r"Invalid optimizer: the factory returned NoneType"),
    (
        dict(optimizer=_other_params_factory),
        r"Invalid optimizer: the inner optimizer must have one param group",
    ),
    (
        dict(optimizer=lambda g: torch.optim.Adam(g, maximize=True)),
        r"Invalid optimizer: the inner optimizer has maximize=True",
    ),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        evoopt.OpenAIES([torch.nn.Parameter(torch.zeros(D))], **{"popsize": 4, **kwargs})


def test_bad_sigma_in_a_param_group():
    with pytest.raises(ValueError, match=r"Invalid sigma: 0"):
        evoopt.OpenAIES([{"params": [torch.nn.Parameter(torch.zeros(2))], "sigma": 0}], popsize=4)


def test_recycled_population_buffers_never_overwrite_a_population_still_held():
    x = torch.nn.Parameter(torch.zeros(D))
    opt = evoopt.OpenAIES([x], popsize=4, seed=0)
    first = opt.ask()
    kept = first.flat.clone()
    opt.tell(sphere(first.flat))
    row = first.flat[1]  # a view of the first population's storage, held
    ptr = first.flat.data_ptr()
    del first
    second = opt.ask()
    kept2 = second.flat.clone()
    opt.tell(sphere(second.flat))
    third = opt.ask()  # `second` is still held too
    assert len({second.flat.data_ptr(), third.flat.data_ptr(), ptr}) == 3
    assert torch.equal(row, kept[1])
    opt.tell(sphere(third.flat))
    ptr3 = third.flat.data_ptr()
    del third, row
    fourth = opt.ask()  # the released buffer is recycled (the point: no fresh pages at large D)
    assert fourth.flat.data_ptr() == ptr3  # (the first one has left the pool; `second` is held)
    assert torch.equal(second.flat, kept2)


@pytest.mark.parametrize("name", ["openai_es", "pgpe"])
def test_loading_one_state_dict_twice_shares_no_inner_state(name):
    """Regression: the inner optimizer's state was loaded without a copy, so two optimizers
    loaded from one state_dict shared (and updated in place) the same Adam moments / ClipUp
    velocities, and the caller's checkpoint changed under it."""
    cls = evoopt.OPTIMIZERS[name]

    def make():
        p = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 5, dtype=torch.float64))
        return cls([p], lr=0.1, sigma=0.1, popsize=8, seed=0)

    def f(pop):
        return (pop.flat**2).sum(1)

    opt = make()
    for _ in range(3):
        opt.step(f)
    sd = opt.state_dict()
    frozen = {k: v.clone() for k, v in sd["evoopt"]["inner"]["state"][0].items()}
    a, b = make(), make()
    a.load_state_dict(sd)
    b.load_state_dict(sd)
    a.step(f)
    a.step(f)
    for k, v in sd["evoopt"]["inner"]["state"][0].items():
        assert torch.equal(v, frozen[k]), k  # the checkpoint is untouched
    for _ in range(2):  # b resumes exactly like the original
        b.step(f)
        opt.step(f)
    assert torch.equal(b.mean, opt.mean)
    assert torch.equal(a.mean, opt.mean)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("weight_decay", -0.5, r"Invalid weight_decay: -0.5 \(expected a finite number >= 0\)"),
        ("lr", float("inf"), r"Invalid lr: inf \(expected a finite number >= 0\)"),
    ],
)
def test_group_values_changed_mid_run_are_validated(key, value, match):
    """Regression: only sigma was checked after construction; a negative weight_decay or an
    infinite lr set mid-run went into the update silently."""
    x = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = evoopt.OpenAIES([x], popsize=8, seed=0)
    opt.step(lambda pop: (pop.flat**2).sum(1))
    mean = opt.mean.clone()
    opt.param_groups[0][key] = value
    with pytest.raises(ValueError, match=match):
        opt.step(lambda pop: (pop.flat**2).sum(1))
    assert torch.equal(opt.mean, mean) and opt.generation == 1
    opt.param_groups[0][key] = 0.0  # lr annealed to 0 by a schedule, or no weight decay: fine
    opt.step(lambda pop: (pop.flat**2).sum(1))


@pytest.mark.parametrize("name", ["openai_es", "pgpe"])
@pytest.mark.parametrize("corrupt, match", [
    ("nan", r"inner optimizer state 0 '\w+' has NaN or infinite entries"),
    ("shape", r"inner optimizer state 0 '\w+' has shape \(2,\), expected the parameter's \(5,\)"),
    ("index", r"inner optimizer state for parameter 7 \(expected indices 0..0\)"),
])
def test_corrupted_inner_optimizer_state_is_refused(name, corrupt, match):
    """Regression: torch's load_state_dict checks none of the inner optimizer's moments, so
    a NaN in Adam's exp_avg_sq (or ClipUp's velocity) loaded silently and the center became
    NaN at the next step; a wrong shape failed only then."""
    def make():
        p = torch.nn.Parameter(torch.ones(5, dtype=torch.float64))
        return evoopt.OPTIMIZERS[name]([p], lr=0.1, sigma=0.1, popsize=8, seed=0)

    def f(pop):
        return (pop.flat**2).sum(1)

    opt = make()
    opt.step(f)
    sd = opt.state_dict()
    state = sd["evoopt"]["inner"]["state"]
    key = next(k for k, v in state[0].items() if v.dim() == 1)
    if corrupt == "nan":
        state[0][key][1] = math.nan
    elif corrupt == "shape":
        state[0][key] = state[0][key][:2]
    else:
        state[7] = state.pop(0)
    fresh = make()
    with pytest.raises(ValueError, match=match):
        fresh.load_state_dict(sd)
    assert fresh.generation == 0 and not fresh.inner_optimizer.state
    fresh.step(f)
    assert torch.isfinite(fresh.mean).all()
