"""ClipUp against a plain float64 loop of the paper's equations (Toklu et al. 2020, Alg. 1),
convergence, schedulers, bad input and exact state_dict round trips."""

import io

import pytest
import torch

import evoopt


def reference_clipup(x0, grads, lr, momentum, max_speed, maximize=False):
    """Algorithm 1 of the paper on the concatenated vector, for gradient *ascent* of -loss."""
    x = torch.cat([t.reshape(-1) for t in x0]).clone()
    v = torch.zeros_like(x)
    for g in grads:
        g = torch.cat([t.reshape(-1) for t in g])
        ascent = g if maximize else -g
        v = momentum * v + lr * ascent / torch.linalg.vector_norm(ascent)
        speed = torch.linalg.vector_norm(v)
        if speed > max_speed:
            v = v * (max_speed / speed)
        x = x + v
    return x


def random_grads(shapes, steps, seed):
    g = torch.Generator().manual_seed(seed)
    return [
        [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes] for _ in range(steps)
    ]


@pytest.mark.parametrize(
    "lr,momentum,max_speed,maximize",
    [
        (0.1, 0.9, None, False),
        (0.1, 0.9, 0.13, False),
        (0.05, 0.0, None, True),
        (0.3, 0.5, 0.2, True),
    ],
)
def test_matches_the_papers_equations_in_float64(lr, momentum, max_speed, maximize):
    shapes = [(3, 4), (5,)]
    g = torch.Generator().manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(*s, generator=g, dtype=torch.float64)) for s in shapes]
    x0 = [p.detach().clone() for p in params]
    grads = random_grads(shapes, 12, seed=2)
    opt = evoopt.ClipUp(params, lr=lr, momentum=momentum, max_speed=max_speed, maximize=maximize)
    for step_grads in grads:
        for p, gr in zip(params, step_grads):
            p.grad = gr.clone()
        opt.step()
    expected = reference_clipup(
        x0, grads, lr, momentum, 2 * lr if max_speed is None else max_speed, maximize
    )
    got = torch.cat([p.detach().reshape(-1) for p in params])
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-15)


def test_norm_is_taken_over_the_whole_group_not_per_tensor():
    a = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = evoopt.ClipUp([a, b], lr=0.1, momentum=0.0)
    a.grad = torch.tensor([3.0, 0.0], dtype=torch.float64)
    b.grad = torch.tensor([0.0, 4.0, 0.0], dtype=torch.float64)
    opt.step()
    # one normalized step of length lr on the joint vector (3, 0, 0, 4, 0) / 5
    torch.testing.assert_close(a.detach(), torch.tensor([-0.06, 0.0], dtype=torch.float64))
    torch.testing.assert_close(b.detach(), torch.tensor([0.0, -0.08, 0.0], dtype=torch.float64))
    assert torch.equal(opt.state[a]["velocity"], -a.detach())


def test_zero_gradient_gives_no_step_and_no_nan():
    x = torch.nn.Parameter(torch.ones(4))
    opt = evoopt.ClipUp([x], lr=0.1)
    x.grad = torch.zeros(4)
    opt.step()
    assert torch.equal(x.detach(), torch.ones(4))


def test_converges_on_a_quadratic_with_a_decaying_lr():
    scales = torch.tensor([1.0, 2.0, 4.0, 0.5, 3.0])
    target = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0])
    x = torch.nn.Parameter(torch.zeros(5))
    opt = evoopt.ClipUp([x], lr=0.2)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.98)
    for _ in range(400):
        opt.zero_grad()
        loss = (scales * (x - target) ** 2).sum()
        loss.backward()
        opt.step()
        sched.step()
    # budget: 400 gradient evaluations; every coordinate within 1e-3 of the optimum
    assert (x.detach() - target).abs().max() < 1e-3


def test_scheduler_changes_the_step_length_and_max_speed_follows_lr():
    x = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = evoopt.ClipUp([x], lr=0.4, momentum=0.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    lengths = []
    for _ in range(3):
        before = x.detach().clone()
        x.grad = torch.tensor([1.0, 2.0, -2.0], dtype=torch.float64)
        opt.step()
        sched.step()
        lengths.append(float(torch.linalg.vector_norm(x.detach() - before)))
    assert lengths == pytest.approx([0.4, 0.2, 0.1], rel=1e-12)
    # with momentum the speed saturates at max_speed = 2 * lr (here 2 * 0.05)
    opt2 = evoopt.ClipUp([x], lr=0.05, momentum=0.99)
    for _ in range(50):
        x.grad = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        opt2.step()
    assert float(torch.linalg.vector_norm(opt2.state[x]["velocity"])) == pytest.approx(
        0.1, rel=1e-12
    )


BAD = [
    (dict(lr=0.0), r"Invalid lr: 0.0 \(expected a finite number > 0\)"),
    (dict(lr=-1.0), r"Invalid lr: -1.0"),
    (dict(momentum=1.0), r"Invalid momentum: 1.0 \(expected a number in \[0.0, 1.0\)\)"),
    (dict(momentum=-0.1), r"Invalid momentum: -0.1"),
    (dict(max_speed=0.0), r"Invalid max_speed: 0.0 \(expected a finite number > 0\)"),
    (dict(max_speed=-2.0), r"Invalid max_speed: -2.0"),
    (dict(maximize=1), r"Invalid maximize: 1"),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        evoopt.ClipUp([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_bad_param_group_is_refused_and_not_added():
    opt = evoopt.ClipUp([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="Invalid momentum: 2.0"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "momentum": 2.0})
    assert len(opt.param_groups) == 1


def test_state_dict_round_trip_is_exact():
    def fresh():
        torch.manual_seed(0)
        return torch.nn.Linear(4, 3)

    def grads(model, k):
        g = torch.Generator().manual_seed(k)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)

    model = fresh()
    opt = evoopt.ClipUp(model.parameters(), lr=0.05, momentum=0.9, max_speed=0.08)
    for k in range(5):
        grads(model, k)
        opt.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    for k in range(5, 10):
        grads(model, k)
        opt.step()
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    model2 = fresh()
    model2.load_state_dict(ckpt["model"])
    opt2 = evoopt.ClipUp(model2.parameters(), lr=1.0)
    opt2.load_state_dict(ckpt["opt"])
    assert opt2.param_groups[0]["max_speed"] == 0.08
    for k in range(5, 10):
        grads(model2, k)
        opt2.step()
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p]["velocity"], opt2.state[q]["velocity"])


def test_a_param_group_with_a_non_bool_maximize_is_refused():
    """Regression: only the constructor checked maximize; a group added with
    maximize="no" (truthy) would have climbed the loss silently."""
    opt = evoopt.ClipUp([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match=r"Invalid maximize: 'no' \(expected True or False\)"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "maximize": "no"})
    assert len(opt.param_groups) == 1


# ------------------------------------------- several param groups (issue 12, item 11)
@pytest.mark.parametrize("maximize", [False, True])
def test_groups_with_the_same_settings_match_the_papers_equations_on_the_whole_vector(maximize):
    shapes = [(3, 4), (5,), (2,)]
    g = torch.Generator().manual_seed(4)
    params = [torch.nn.Parameter(torch.randn(*s, generator=g, dtype=torch.float64)) for s in shapes]
    x0 = [p.detach().clone() for p in params]
    grads = random_grads(shapes, 12, seed=5)
    opt = evoopt.ClipUp([{"params": [params[0]]}, {"params": params[1:]}], lr=0.1,
                        momentum=0.9, maximize=maximize)
    for step_grads in grads:
        for p, gr in zip(params, step_grads):
            p.grad = gr.clone()
        opt.step()
    expected = reference_clipup(x0, grads, 0.1, 0.9, 0.2, maximize)
    got = torch.cat([p.detach().reshape(-1) for p in params])
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-15)


def test_groups_with_their_own_lr_and_max_speed_share_the_global_norms():
    a = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = evoopt.ClipUp([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.2, "max_speed": 0.05}],
                        momentum=0.0)
    a.grad = torch.tensor([3.0, 0.0], dtype=torch.float64)
    b.grad = torch.tensor([0.0, 4.0, 0.0], dtype=torch.float64)
    opt.step()
    # d / ||d|| = (0.6, 0, | 0, 0.8, 0); velocity (0.06, 0 | 0, 0.16, 0), speed sqrt(0.0292)
    speed = (0.06**2 + 0.16**2) ** 0.5
    torch.testing.assert_close(a.detach(), torch.tensor([-0.06, 0.0], dtype=torch.float64))
    torch.testing.assert_close(  # group b is clipped to 0.05 / speed of its velocity
        b.detach(), torch.tensor([0.0, -0.16 * 0.05 / speed, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("name,extra", [("pgpe", {}), ("openai_es", {"optimizer": evoopt.ClipUp})])
def test_es_with_clipup_steps_alike_with_one_or_two_param_groups(name, extra):
    # the repro: the first step was lr * sqrt(2) long with two groups
    runs = []
    for split in (False, True):
        x = torch.nn.Parameter(torch.zeros(10, dtype=torch.float64))
        groups = [x] if not split else [{"params": [x[:4].detach().clone().requires_grad_()]},
                                        {"params": [x[4:].detach().clone().requires_grad_()]}]
        opt = evoopt.OPTIMIZERS[name](groups, 0.05, sigma=0.3, popsize=20, seed=3, **extra)
        norms = []
        for _ in range(4):
            before = opt.mean.clone()
            opt.step(lambda pop: ((pop.flat - 1) ** 2).sum(-1))
            norms.append(float((opt.mean - before).norm()))
        runs.append((norms, opt.mean.clone()))
    assert runs[0][0][0] == pytest.approx(0.05, rel=1e-9)
    assert runs[1][0] == pytest.approx(runs[0][0], rel=1e-9)
    torch.testing.assert_close(runs[1][1], runs[0][1], rtol=1e-9, atol=1e-12)
