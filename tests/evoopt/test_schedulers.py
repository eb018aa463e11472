"""evoopt.schedulers: sigma schedules against their closed forms, composition with torch's
lr schedulers, exact resume through a checkpoint, and bad input."""

import math

import pytest
import torch

import evoopt
from evoopt.schedulers import (
    CosineAnnealingSigma,
    ExponentialSigma,
    LambdaSigma,
    StepSigma,
)

from ._helpers import roundtrip, sphere_pop


def _opt(name="openai_es", sigma=0.5, seed=0):
    x = torch.nn.Parameter(torch.linspace(-2.0, 2.0, 6))
    return x, evoopt.OPTIMIZERS[name]([x], sigma=sigma, popsize=10, seed=seed)


SCHEDULES = {
    "step": (lambda o: StepSigma(o, step_size=3, gamma=0.5), lambda s0, t: s0 * 0.5 ** (t // 3)),
    "exponential": (lambda o: ExponentialSigma(o, gamma=0.9), lambda s0, t: s0 * 0.9**t),
    "cosine": (lambda o: CosineAnnealingSigma(o, T_max=8, eta_min=0.01),
               lambda s0, t: 0.01 + (s0 - 0.01) * (1 + math.cos(math.pi * min(t, 8) / 8)) / 2),
    "lambda": (lambda o: LambdaSigma(o, lambda t: 1 / (1 + t)), lambda s0, t: s0 / (1 + t)),
}


@pytest.mark.parametrize("kind", sorted(SCHEDULES))
def test_sigma_follows_the_closed_form_per_group(kind):
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    opt = evoopt.OpenAIES([{"params": [a], "sigma": 0.4}, {"params": [b]}], sigma=0.2,
                          popsize=10, seed=0)
    build, closed_form = SCHEDULES[kind]
    sched = build(opt)
    for t in range(1, 12):
        opt.step(sphere_pop)
        sched.step()
        assert sched.last_epoch == t
        assert sched.get_last_sigma() == pytest.approx([closed_form(0.4, t), closed_form(0.2, t)],
                                                       rel=1e-12)
        assert opt.current_sigma == pytest.approx(
            math.sqrt((2 * closed_form(0.4, t) ** 2 + 3 * closed_form(0.2, t) ** 2) / 5))


@pytest.mark.parametrize("name", ["pgpe", "snes"])
def test_an_adaptive_width_is_rescaled_by_the_schedule(name):
    x, opt = _opt(name)
    for _ in range(3):
        opt.step(sphere_pop)
    sched = ExponentialSigma(opt, gamma=0.5)
    before = opt.current_sigma
    sched.step()
    assert opt.current_sigma == pytest.approx(before * 0.5, rel=1e-12)


def test_composes_with_an_lr_scheduler_and_resumes_exactly():
    def fresh(seed):
        x, opt = _opt(seed=seed)
        lr_s = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20, eta_min=0.001)
        sigma_s = CosineAnnealingSigma(opt, T_max=20, eta_min=0.05)
        return x, opt, lr_s, sigma_s

    def run(opt, lr_s, sigma_s, n):
        out = []
        for _ in range(n):
            out.append(float(opt.step(sphere_pop)))
            lr_s.step()
            sigma_s.step()
        return out

    x, opt, lr_s, sigma_s = fresh(3)
    run(opt, lr_s, sigma_s, 5)
    ckpt = roundtrip({"opt": opt.state_dict(), "lr": lr_s.state_dict(),
                      "sigma": sigma_s.state_dict()})
    expected = run(opt, lr_s, sigma_s, 5)

    x2, opt2, lr2, sigma2 = fresh(99)  # schedulers built before the optimizer loads
    opt2.load_state_dict(ckpt["opt"])
    lr2.load_state_dict(ckpt["lr"])
    sigma2.load_state_dict(ckpt["sigma"])
    assert run(opt2, lr2, sigma2, 5) == expected
    assert torch.equal(x.detach(), x2.detach())
    assert opt2.param_groups[0]["sigma"] == opt.param_groups[0]["sigma"]


def test_a_checkpoint_saved_without_a_scheduler_loads_into_one_with_it():
    _, opt = _opt()
    opt.step(sphere_pop)
    ckpt = roundtrip(opt.state_dict())
    _, opt2 = _opt()
    sched = ExponentialSigma(opt2, gamma=0.9)
    opt2.load_state_dict(ckpt)  # its groups have no initial_sigma: the schedule starts here
    sched.step()
    assert opt2.param_groups[0]["sigma"] == pytest.approx(0.45)


BAD = [
    (lambda o: StepSigma(o, step_size=0), r"Invalid step_size: 0 \(expected an integer >= 1\)"),
    (lambda o: ExponentialSigma(o, gamma=-0.5), r"Invalid gamma: -0.5"),
    (lambda o: CosineAnnealingSigma(o, T_max=5, eta_min=0.0), r"Invalid eta_min: 0.0"),
    (lambda o: LambdaSigma(o, 0.5), r"Invalid fn: 0.5"),
    (lambda o: ExponentialSigma(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1),
                                gamma=0.5), r"param group 0 of SGD has no 'sigma'"),
    (lambda o: ExponentialSigma("opt", gamma=0.5), r"Invalid optimizer: str"),
]


@pytest.mark.parametrize("build,match", BAD)
def test_bad_arguments(build, match):
    _, opt = _opt()
    with pytest.raises(ValueError, match=match):
        build(opt)


def test_a_schedule_reaching_zero_is_refused_before_any_group_changes():
    _, opt = _opt()
    sched = LambdaSigma(opt, lambda t: 1.0 if t < 2 else 0.0)
    sched.step()
    with pytest.raises(ValueError, match=r"Invalid sigma of param group 0 at step 2: 0.0"):
        sched.step()
    assert opt.param_groups[0]["sigma"] == 0.5 and sched.last_epoch == 1


def test_load_state_dict_refuses_another_schedulers_state():
    _, opt = _opt()
    sched = StepSigma(opt, step_size=2)
    keys = r"expected the keys \['gamma', 'last_epoch', 'step_size'\]"
    with pytest.raises(ValueError, match=keys):
        sched.load_state_dict(ExponentialSigma(opt, gamma=0.5).state_dict())
    with pytest.raises(ValueError, match="last_epoch"):
        sched.load_state_dict({"gamma": 0.1, "last_epoch": -1, "step_size": 2})
