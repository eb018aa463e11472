"""PGPE (Sehnke et al. 2010, symmetric sampling; ClipUp center as in Toklu et al. 2020):
a float64 reference of the equations, EvoTorch's own gradients and ClipUp, convergence
budgets, the sigma-rescaling rule, radius_init, stdev cap, resume, bad input."""

import math

import pytest
import torch

import evoopt

from ._helpers import centered_rank_reference as centered_rank
from ._helpers import rosenbrock, roundtrip, sphere

D = 10


def test_two_generations_match_a_float64_reference():
    P, H, lr, sigma, seed = 8, 4, 0.1, 0.2, 3
    stdev_lr, max_change = 2.0, 0.2  # large stdev_lr: the cap is active on some coordinates
    x0 = torch.linspace(-1.0, 2.0, D, dtype=torch.float64)
    x = torch.nn.Parameter(x0.clone())
    opt = evoopt.PGPE([x], popsize=P, lr=lr, sigma=sigma, stdev_lr=stdev_lr, seed=seed)
    for _ in range(2):
        opt.step(lambda pop: rosenbrock(pop.flat))

    gen = torch.Generator().manual_seed(seed)
    mean, stdev, velocity = (
        x0.clone(),
        torch.full((D,), sigma, dtype=torch.float64),
        torch.zeros(D, dtype=torch.float64),
    )
    capped = 0
    for _ in range(2):
        T = stdev * torch.randn(H, D, generator=gen, dtype=torch.float64)  # perturbations
        c = centered_rank(rosenbrock(torch.cat([mean + T, mean - T])))
        cp, cm = c[:H], c[H:]
        b = ((cp + cm) / 2).mean()
        grad_mean = sum((cp[i] - cm[i]) / 2 * T[i] for i in range(H)) / H
        grad_stdev = (
            sum(((cp[i] + cm[i]) / 2 - b) * (T[i] ** 2 - stdev**2) / stdev for i in range(H)) / H
        )
        # ClipUp (paper, Alg. 1) descending the cost, max_speed = 2 lr
        velocity = 0.9 * velocity - lr * grad_mean / grad_mean.norm()
        if velocity.norm() > 2 * lr:
            velocity = velocity * (2 * lr / velocity.norm())
        mean = mean + velocity
        target = stdev - stdev_lr * grad_stdev
        new = torch.minimum(
            torch.maximum(target, (1 - max_change) * stdev), (1 + max_change) * stdev
        )
        capped += int((new != target).sum())
        stdev = new
    assert capped > 0
    torch.testing.assert_close(x.detach(), mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(opt.stdev, stdev, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(x.grad, grad_mean, rtol=1e-12, atol=1e-14)


def test_one_generation_equals_evotorch_gradients_clipup_and_stdev_cap():
    pytest.importorskip("evotorch")
    from evotorch.distributions import SymmetricSeparableGaussian
    from evotorch.optimizers import ClipUp as EvoClipUp
    from evotorch.tools.misc import modify_tensor

    P, H, lr, sigma, seed = 12, 6, 0.15, 0.3, 8
    x0 = torch.linspace(0.5, -0.5, D, dtype=torch.float64)
    x = torch.nn.Parameter(x0.clone())
    opt = evoopt.PGPE(
        [x], popsize=P, lr=lr, sigma=sigma, stdev_lr=0.1, stdev_max_change=0.2, seed=seed
    )
    pop = opt.ask()
    losses = rosenbrock(pop.flat)
    opt.tell(losses)

    # EvoTorch stores the pairs interleaved: (+0, -0, +1, -1, ...)
    samples = torch.stack([pop.flat[:H], pop.flat[H:]], 1).reshape(P, D)
    fitness = torch.stack([losses[:H], losses[H:]], 1).reshape(P)
    dist = SymmetricSeparableGaussian(
        {
            "mu": x0,
            "sigma": torch.full((D,), sigma, dtype=torch.float64),
            "divide_mu_grad_by": "num_directions",
            "divide_sigma_grad_by": "num_directions",
        },
        dtype=torch.float64,
    )
    grads = dist.compute_gradients(
        samples, fitness, objective_sense="min", ranking_method="centered"
    )
    clipup = EvoClipUp(
        solution_length=D, dtype=torch.float64, stepsize=lr
    )  # momentum 0.9, max_speed 2 lr
    center = x0 + clipup.ascent(grads["mu"])
    stdev = modify_tensor(dist.sigma, dist.sigma + 0.1 * grads["sigma"], max_change=0.2)
    torch.testing.assert_close(x.detach(), center, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(opt.stdev, stdev, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "kwargs,fn,x0,budget,threshold",
    [
        (dict(lr=0.05, optimizer=torch.optim.Adam), sphere, 3.0, 10_000, 1e-6),
        (dict(lr=0.05, optimizer=torch.optim.Adam), rosenbrock, 0.0, 40_000, 1e-2),
        (dict(lr=0.2), sphere, 3.0, 4_000, 0.5),  # ClipUp: fast travel, then |step| ~ lr
    ],
    ids=["adam-sphere", "adam-rosenbrock", "clipup-sphere"],
)
def test_converges_within_budget(kwargs, fn, x0, budget, threshold):
    x = torch.nn.Parameter(torch.full((D,), x0, dtype=torch.float64))
    opt = evoopt.PGPE([x], popsize=20, sigma=0.3, seed=0, **kwargs)
    start = float(fn(x.detach()))
    while opt.num_evals < budget:
        opt.step(lambda pop: fn(pop.flat))
    assert float(fn(x.detach())) < threshold < start


def test_clipup_center_converges_with_an_lr_schedule():
    x = torch.nn.Parameter(torch.full((D,), 3.0, dtype=torch.float64))
    opt = evoopt.PGPE([x], popsize=20, lr=0.2, sigma=0.3, seed=0)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.99)
    while opt.num_evals < 10_000:
        opt.step(lambda pop: sphere(pop.flat))
        sched.step()
    assert opt.inner_optimizer.param_groups[0]["lr"] == pytest.approx(
        0.2 * 0.99**499
    )  # the last step's lr
    assert float(sphere(x.detach())) < 1e-4


def test_changing_sigma_rescales_the_learned_stdev():
    x = torch.nn.Parameter(torch.ones(D, dtype=torch.float64))
    opt = evoopt.PGPE([x], popsize=8, sigma=0.2, seed=1)
    for _ in range(3):
        opt.step(lambda pop: rosenbrock(pop.flat))
    learned = opt.stdev.clone()
    assert not torch.allclose(learned, torch.full_like(learned, 0.2))
    opt.param_groups[0]["sigma"] = 0.05  # by hand or by a scheduler: rescale by 0.05 / 0.2
    gen = torch.Generator()
    gen.set_state(opt.state_dict()["evoopt"]["rng"])
    pop = opt.ask()
    torch.testing.assert_close(opt.stdev, learned * 0.25, rtol=1e-15, atol=0)
    eps = torch.randn(4, D, generator=gen, dtype=torch.float64)
    torch.testing.assert_close((pop.flat[:4] - pop.flat[4:]) / 2, learned * 0.25 * eps)
    opt.tell(rosenbrock(pop.flat))
    opt.param_groups[0]["sigma"] = 0.0
    with pytest.raises(ValueError, match=r"Invalid sigma: 0.0 in param group 0 \(expected > 0"):
        opt.ask()


def test_radius_init_sets_the_norm_of_the_stdev():
    x = torch.nn.Parameter(torch.zeros(25, dtype=torch.float64))
    opt = evoopt.PGPE([x], popsize=4, radius_init=2.0)
    assert opt.param_groups[0]["sigma"] == pytest.approx(0.4)
    assert float(opt.stdev.norm()) == pytest.approx(2.0, rel=1e-14)
    with pytest.raises(
        ValueError, match=r"Invalid sigma=0.1 with radius_init=2.0 \(expected one of them"
    ):
        evoopt.PGPE([x], popsize=4, sigma=0.1, radius_init=2.0)


def test_stdev_change_per_generation_is_capped():
    x = torch.nn.Parameter(torch.ones(D, dtype=torch.float64))
    opt = evoopt.PGPE([x], popsize=8, sigma=0.3, stdev_lr=100.0, stdev_max_change=0.2, seed=0)
    for _ in range(5):
        before = opt.stdev.clone()
        opt.step(lambda pop: sphere(pop.flat))
        ratio = opt.stdev / before
        assert ratio.min() >= 0.8 - 1e-15 and ratio.max() <= 1.2 + 1e-15
        assert ((ratio - 0.8).abs() < 1e-12).any() or ((ratio - 1.2).abs() < 1e-12).any()


@pytest.mark.parametrize("optimizer", [evoopt.ClipUp, torch.optim.Adam, torch.optim.SGD])
def test_maximize_equals_minimizing_the_negated_loss(optimizer):
    runs = []
    for maximize, sign in ((False, 1.0), (True, -1.0)):
        x = torch.nn.Parameter(torch.full((D,), 0.5, dtype=torch.float64))
        opt = evoopt.PGPE([x], popsize=8, lr=0.01, optimizer=optimizer, maximize=maximize, seed=2)
        for _ in range(5):
            opt.step(lambda pop, s=sign: s * rosenbrock(pop.flat))
        runs.append((x.detach().clone(), opt.stdev.clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_sgd_inner_step_uses_the_outer_lr():
    x = torch.nn.Parameter(torch.ones(D, dtype=torch.float64))
    opt = evoopt.PGPE([x], popsize=4, lr=0.3, optimizer=torch.optim.SGD, seed=0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    for lr in (0.3, 0.03):
        before = x.detach().clone()
        opt.step(lambda pop: sphere(pop.flat))
        torch.testing.assert_close(x.detach(), before - lr * x.grad, rtol=0, atol=1e-15)
        sched.step()


@pytest.mark.parametrize("optimizer", [evoopt.ClipUp, torch.optim.Adam])
def test_exact_resume_with_weights_only_checkpoint(optimizer):
    def fresh(seed):
        x = torch.nn.Parameter(
            torch.full((D,), 0.5)
        )  # float32: stdev and inner state survive the load
        opt = evoopt.PGPE([x], popsize=10, lr=0.05, sigma=0.2, optimizer=optimizer, seed=seed)
        return x, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    x, opt, sched = fresh(4)
    for k in range(3):
        opt.step(lambda pop: rosenbrock(pop.flat))
        sched.step()
    opt.param_groups[0]["sigma"] = 0.15
    ckpt = roundtrip({"opt": opt.state_dict(), "sched": sched.state_dict()})
    expected = []
    for _ in range(4):
        expected.append(
            (
                float(opt.step(lambda pop: rosenbrock(pop.flat))),
                x.detach().clone(),
                opt.stdev.clone(),
            )
        )
        sched.step()
    x2, opt2, sched2 = fresh(77)
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    for loss, xe, se in expected:
        assert float(opt2.step(lambda pop: rosenbrock(pop.flat))) == loss
        sched2.step()
        assert torch.equal(x2.detach(), xe) and torch.equal(opt2.stdev, se)


BAD = [
    (dict(lr=-0.1), r"Invalid lr: -0.1 \(expected a finite number > 0\)"),
    (dict(sigma=0.0), r"Invalid sigma: 0.0"),
    (dict(radius_init=0.0), r"Invalid radius_init: 0.0"),
    (dict(popsize=3), r"Invalid popsize: 3 \(expected an even integer"),
    (dict(stdev_lr=-1.0), r"Invalid stdev_lr: -1.0 \(expected a finite number >= 0\)"),
    (
        dict(stdev_max_change=0.0),
        r"Invalid stdev_max_change: 0.0 \(expected a number in \(0.0, 1.0\)\)",
    ),
    (dict(stdev_max_change=1.0), r"Invalid stdev_max_change: 1.0"),
    (dict(weight_decay=-0.5), r"Invalid weight_decay: -0.5"),
    (dict(optimizer=3), r"Invalid optimizer: 3 \(expected a torch.optim.Optimizer class"),
    (dict(optimizer=evoopt.OpenAIES), r"Invalid optimizer: .*not a population optimizer"),
    (dict(shaping="ranks"), r"Invalid shaping: 'ranks'"),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        evoopt.PGPE([torch.nn.Parameter(torch.zeros(D))], **{"popsize": 4, **kwargs})


def test_checkpoint_checks_stdev_shape():
    x = torch.nn.Parameter(torch.zeros(D))
    opt = evoopt.PGPE([x], popsize=4, seed=0)
    opt.step(lambda pop: sphere(pop.flat))
    sd = roundtrip(opt.state_dict())
    sd["state"]["population"]["stdev"] = torch.ones(D + 1)
    with pytest.raises(ValueError, match=r"saved stdev has shape"):
        evoopt.PGPE([torch.nn.Parameter(torch.zeros(D))], popsize=4).load_state_dict(sd)
    assert math.isfinite(float(opt.stdev.sum()))


def test_bad_param_group_is_refused_before_it_is_added():
    x = torch.nn.Parameter(torch.zeros(D))
    opt = evoopt.PGPE([x], popsize=4, seed=0)
    with pytest.raises(ValueError, match=r"Invalid stdev_max_change: 1.5"):
        opt.add_param_group(
            {"params": [torch.nn.Parameter(torch.zeros(3))], "stdev_max_change": 1.5}
        )
    assert len(opt.param_groups) == 1 and len(opt.inner_optimizer.param_groups) == 1
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3))], "lr": 0.5})
    assert [g["lr"] for g in opt.inner_optimizer.param_groups] == [0.1, 0.5]
    assert opt.num_params == D + 3
    opt.step(lambda pop: sphere(pop.flat))
    assert opt.stdev.shape == (D + 3,)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("stdev_max_change", 1.0,
         r"Invalid stdev_max_change: 1.0 \(expected a number in \(0.0, 1.0\)\)"),
        ("stdev_lr", -0.1, r"Invalid stdev_lr: -0.1 \(expected a finite number >= 0\)"),
        ("weight_decay", float("nan"), r"Invalid weight_decay: nan"),
        ("lr", -0.1, r"Invalid lr: -0.1 \(expected a finite number >= 0\)"),
    ],
)
def test_group_values_changed_mid_run_are_validated_before_they_reach_the_state(key, value, match):
    """Regression: only sigma was checked after construction, so e.g. stdev_max_change=1.0
    set mid-run let the stdev collapse to exactly 0 (and stay there) without a word."""
    x = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = evoopt.PGPE([x], popsize=8, sigma=0.3, stdev_lr=100.0, seed=0)
    opt.step(lambda pop: (pop.flat**2).sum(1))
    before = opt.state_dict()
    opt.param_groups[0][key] = value
    with pytest.raises(ValueError, match=match):
        opt.step(lambda pop: (pop.flat**2).sum(1))
    after = opt.state_dict()
    assert torch.equal(after["state"]["population"]["stdev"],
                       before["state"]["population"]["stdev"])
    assert after["state"]["population"]["generation"] == 1
    opt.param_groups[0][key] = before["param_groups"][0][key]
    opt.param_groups[0]["lr"] = 0.0  # a schedule may anneal lr to 0
    opt.step(lambda pop: (pop.flat**2).sum(1))


def test_a_bad_sigma_in_one_group_leaves_the_other_groups_stdev_alone():
    """Regression: the groups were rescaled one by one, so a valid new sigma in group 0
    was applied before group 1's invalid one raised: a failed step changed the state."""
    a = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = evoopt.PGPE([{"params": [a]}, {"params": [b]}], popsize=8, sigma=0.3, seed=0)
    opt.step(lambda pop: (pop.flat**2).sum(1))
    stdev = opt.stdev.clone()
    opt.param_groups[0]["sigma"] = 0.15
    opt.param_groups[1]["sigma"] = -1.0
    with pytest.raises(ValueError, match=r"Invalid sigma: -1.0 in param group 1"):
        opt.step(lambda pop: (pop.flat**2).sum(1))
    assert torch.equal(opt.stdev, stdev)
    opt.param_groups[1]["sigma"] = 0.3
    opt.step(lambda pop: (pop.flat**2).sum(1))  # now group 0's halving applies, once
    assert opt.generation == 2
