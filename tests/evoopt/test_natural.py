"""NaturalGradient: CG against a direct solve, the TRPO step against its closed form for a
linear-Gaussian policy (float64), the trust region on a categorical policy, bad input."""

import math

import pytest
import torch

from evoopt.gradient import NaturalGradient
from evoopt.gradient.natural import conjugate_gradient

D64 = torch.float64


def test_cg_solves_spd_system():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(20, 20, generator=g, dtype=D64)
    A = M @ M.T + 0.5 * torch.eye(20, dtype=D64)
    b = torch.randn(20, generator=g, dtype=D64)
    x = conjugate_gradient(lambda v: A @ v, b, iters=60, residual_tol=1e-24)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-9, atol=1e-9)


def test_cg_exact_after_as_many_iterations_as_distinct_eigenvalues():
    Q, _ = torch.linalg.qr(
        torch.randn(12, 12, generator=torch.Generator().manual_seed(1), dtype=D64))
    A = Q @ torch.diag(torch.tensor([1.0, 2.0, 5.0] * 4, dtype=D64)) @ Q.T  # 3 distinct eigenvalues
    b = torch.arange(1.0, 13.0, dtype=D64)
    x = conjugate_gradient(lambda v: A @ v, b, iters=3, residual_tol=0.0)
    torch.testing.assert_close(A @ x, b, rtol=1e-10, atol=1e-10)


def _gaussian_problem(n=50, k=3, a=2, sigma=0.7, seed=0):
    g = torch.Generator().manual_seed(seed)
    S = torch.randn(n, k, generator=g, dtype=D64)
    W = torch.nn.Parameter(torch.randn(a, k, generator=g, dtype=D64))
    W_old = W.detach().clone()
    c = torch.randn(a, k, generator=g, dtype=D64)

    # KL(N(S W_old^T, s^2) || N(S W^T, s^2)), mean over states, summed over action dims
    def kl_fn():
        return (((S @ (W - W_old).T) ** 2).sum(1) / (2 * sigma**2)).mean()

    # Hessian of kl_fn, row-major vec(W)
    F = torch.kron(torch.eye(a, dtype=D64), S.T @ S / (n * sigma**2))
    return S, W, W_old, c, kl_fn, F


@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_step_equals_closed_form_for_linear_gaussian_policy(damping):
    S, W, W_old, c, kl_fn, F = _gaussian_problem()
    max_kl = 0.02
    opt = NaturalGradient([W], max_kl=max_kl, cg_iters=6, damping=damping, line_search=False,
                          kl_fn=kl_fn)
    opt.zero_grad()
    (c * W).sum().backward()           # a linear loss: g = vec(c)
    opt.step()
    A = F + damping * torch.eye(6, dtype=D64)
    x = torch.linalg.solve(A, c.reshape(-1))
    expected = -math.sqrt(2 * max_kl / float(x @ A @ x)) * x
    torch.testing.assert_close((W.detach() - W_old).reshape(-1), expected, rtol=1e-9, atol=1e-12)
    if damping == 0.0:  # the KL is exactly quadratic: the step lands on the trust region's boundary
        assert float(kl_fn().detach()) == pytest.approx(max_kl, rel=1e-9)


def test_line_search_accepts_full_step_on_a_quadratic_and_maximize_mirrors():
    results = []
    for maximize in (False, True):
        S, W, W_old, c, kl_fn, F = _gaussian_problem(seed=2)
        opt = NaturalGradient([W], max_kl=0.01, cg_iters=6, damping=0.1, kl_fn=kl_fn,
                              maximize=maximize)

        def closure():
            opt.zero_grad()
            loss = (c * W).sum() * (-1 if maximize else 1)
            if torch.is_grad_enabled():
                loss.backward()
            return loss

        opt.step(closure)
        assert opt.last["step_fraction"] == 1.0 and opt.last["kl"] <= 0.01
        # linear loss: the actual improvement equals the first-order one
        assert opt.last["actual_improve"] == pytest.approx(opt.last["expected_improve"], rel=1e-9)
        results.append(W.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


def _categorical_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    S = torch.randn(200, 4, generator=g)
    W = torch.nn.Parameter(0.5 * torch.randn(3, 4, generator=g))
    actions = torch.randint(0, 3, (200,), generator=g)
    adv = torch.randn(200, generator=g)
    old_logp_all = torch.log_softmax(S @ W.detach().T, -1)
    old_logp = old_logp_all.gather(1, actions[:, None])[:, 0]

    def kl_fn():
        new = torch.log_softmax(S @ W.T, -1)
        return (old_logp_all.exp() * (old_logp_all - new)).sum(1).mean()

    def surrogate():  # -E[ratio * A] (TRPO's surrogate, to minimise)
        logp = torch.log_softmax(S @ W.T, -1).gather(1, actions[:, None])[:, 0]
        return -(torch.exp(logp - old_logp) * adv).mean()

    return W, kl_fn, surrogate


@pytest.mark.parametrize("max_kl", [0.001, 0.01, 0.05])
def test_respects_max_kl_on_a_categorical_policy(max_kl):
    W, kl_fn, surrogate = _categorical_problem()
    opt = NaturalGradient([W], max_kl=max_kl, kl_fn=kl_fn)

    def closure():
        opt.zero_grad()
        loss = surrogate()
        if torch.is_grad_enabled():
            loss.backward()
        return loss

    loss0 = float(surrogate().detach())
    opt.step(closure)
    kl = float(kl_fn().detach())
    assert 0 < kl <= max_kl
    assert kl >= 0.25 * max_kl          # a full or half step: the quadratic model is good here
    assert float(surrogate().detach()) < loss0
    assert opt.last["kl"] == pytest.approx(kl)


def test_without_line_search_the_quadratic_model_predicts_the_kl():
    W, kl_fn, surrogate = _categorical_problem(seed=1)
    opt = NaturalGradient([W], max_kl=1e-4, damping=0.0, cg_iters=12, line_search=False,
                          kl_fn=kl_fn)
    opt.zero_grad()
    surrogate().backward()
    opt.step()
    # small step: KL ~ 1/2 s.F s = max_kl
    assert float(kl_fn().detach()) == pytest.approx(1e-4, rel=0.05)


def test_rejects_a_step_that_makes_things_worse():
    # the closure's loss is the NEGATIVE of the one whose gradient was used: no fraction improves it
    S, W, W_old, c, kl_fn, F = _gaussian_problem(seed=3)
    opt = NaturalGradient([W], kl_fn=kl_fn, backtrack_iters=4)
    sign = {"s": 1.0}

    def closure():
        opt.zero_grad()
        loss = sign["s"] * (c * W).sum()
        if torch.is_grad_enabled():
            loss.backward()
            sign["s"] = -1.0
        return loss

    opt.step(closure)
    assert opt.last["step_fraction"] == 0.0
    assert torch.equal(W.detach(), W_old)


@pytest.mark.parametrize("kwargs,match", [
    (dict(max_kl=0.0), "Invalid max_kl: 0.0"),
    (dict(cg_iters=0), "Invalid cg_iters: 0"),
    (dict(damping=-0.1), "Invalid damping: -0.1"),
    (dict(backtrack_coef=1.0),
     r"Invalid backtrack_coef: 1.0 \(expected a number in \(0.0, 1.0\)\)"),
    (dict(backtrack_iters=0), "Invalid backtrack_iters"),
    (dict(kl_fn=3), "Invalid kl_fn: 3"),
    # regression: bool("False") is True, so maximize="False" used to maximise silently
    (dict(maximize="False"), r"Invalid maximize: 'False' \(expected True or False\)"),
    (dict(line_search=None), r"Invalid line_search: None \(expected True or False\)"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NaturalGradient([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_step_errors():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = NaturalGradient([w])
    with pytest.raises(ValueError, match="needs kl_fn"):
        opt.step()
    with pytest.raises(ValueError, match="some parameters have no gradient"):
        opt.step(kl_fn=lambda: (w ** 2).sum())
    w.grad = torch.ones(2)
    with pytest.raises(ValueError, match=r"x.Fx = .* \(expected > 0\)"):
        NaturalGradient([w], damping=0.0).step(kl_fn=lambda: (w * 0).sum() + 0 * (w ** 2).sum())


def test_groups_with_different_hyperparameters_are_refused_not_ignored():
    """Regression: the step used group 0's values only, so max_kl=0.5 given to a second
    group (or set there by a scheduler) was ignored without a word."""
    S, W, W_old, c, kl_fn, F = _gaussian_problem()
    b = torch.nn.Parameter(torch.zeros(2, dtype=D64))
    opt = NaturalGradient([{"params": [W]}, {"params": [b], "max_kl": 0.5}], kl_fn=kl_fn)
    opt.zero_grad()
    ((c * W).sum() + b.sum()).backward()
    before = W.detach().clone()
    with pytest.raises(ValueError,
                       match=r"Invalid max_kl: 0.5 in param group 1 but 0.01 in group 0"):
        opt.step()
    assert torch.equal(W.detach(), before)
