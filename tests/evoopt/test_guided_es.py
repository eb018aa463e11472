"""Guided ES (Maheswaranathan et al. 2019): Algorithm 1 restated in float64 from the same
random numbers, the paper's Figure 1 setting (a quadratic with a biased surrogate gradient),
the surrogate read from ``p.grad``, checkpoints, bad input. The registry suite
(tests/evoopt/test_registry.py) runs the common tests."""

import math
import warnings

import pytest
import torch

from evoopt.algorithms.guided_es import GuidedES

from ._helpers import roundtrip, sphere


def _algorithm_1(x, surrogates, f, gen, *, sigma, alpha, beta, P, lr):
    """One iteration of Algorithm 1 in the paper's names, float64: U from the surrogate
    gradients (newest first, QR), eps_i ~ N(0, sigma_p^2 Sigma) with sigma_p = sigma sqrt(n)
    drawn as sigma_p (sqrt(alpha / n) z_i + sqrt((1 - alpha) / k) U w_i), the antithetic
    estimate g = beta / (2 sigma_p^2 P) sum_i eps_i (f(x + eps_i) - f(x - eps_i))."""
    n, k = x.numel(), len(surrogates)
    U, _ = torch.linalg.qr(torch.stack(surrogates, 1))
    sigma_p = sigma * math.sqrt(n)
    z = torch.randn(P, n, generator=gen, dtype=torch.float64)
    w = torch.randn(P, k, generator=gen, dtype=torch.float64)
    eps = sigma_p * (math.sqrt(alpha / n) * z + math.sqrt((1 - alpha) / k) * w @ U.T)
    g = torch.zeros(n, dtype=torch.float64)
    for i in range(P):
        g += eps[i] * (f(x + eps[i]) - f(x - eps[i]))
    g *= beta / (2 * sigma_p**2 * P)
    return x - lr * g, torch.cat([x + eps, x - eps])


def _rosenbrock(x):
    return (100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2).sum(-1)


def test_algorithm_1_in_float64_from_the_same_random_numbers():
    n, P, k, seed = 6, 4, 2, 11
    hp = dict(sigma=0.2, alpha=0.3, beta=1.7, lr=0.01)
    x = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    opt = GuidedES([x], popsize=2 * P, subspace_dim=k, seed=seed,
                   **{a: hp[a] for a in ("sigma", "alpha", "beta", "lr")})
    gen = torch.Generator().manual_seed(seed)
    ref, history = x.clone(), []
    for t in range(5):
        surrogate = torch.cos(torch.arange(n, dtype=torch.float64) * (t + 1)) + ref
        x.grad = surrogate.clone()
        history = [surrogate, *history][:k]
        ref, members = _algorithm_1(ref, history, _rosenbrock, gen, P=P, **hp)
        pop = opt.ask()
        torch.testing.assert_close(pop.flat, members, rtol=1e-12, atol=1e-12)
        opt.tell(_rosenbrock(pop.flat))
        torch.testing.assert_close(x, ref, rtol=1e-12, atol=1e-12)
        assert x.grad is None  # the estimate is not read back as the next surrogate
    assert opt.generation == 5 and opt.basis().shape == (n, k)


# ------------------------------------------------------------------ Figure 1
N_FIG1, EVALS = 200, 1000


def _quadratic():
    """f(x) = |A x - b|^2 / 2, A = Q diag(0.5..1.5) (n = 200), and the surrogate gradient
    grad f(x) + bias + noise: a fixed random bias of norm 1 and fresh noise of norm ~1."""
    g0 = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(N_FIG1, N_FIG1, generator=g0, dtype=torch.float64))
    A = q * torch.linspace(0.5, 1.5, N_FIG1, dtype=torch.float64)
    b = torch.randn(N_FIG1, generator=g0, dtype=torch.float64)
    bias = torch.randn(N_FIG1, generator=g0, dtype=torch.float64)
    bias /= bias.norm()

    def f(x):
        return 0.5 * ((x @ A.T - b) ** 2).sum(-1)

    def surrogate(x, gen):
        noise = torch.randn(N_FIG1, generator=gen, dtype=torch.float64) / math.sqrt(N_FIG1)
        return A.T @ (A @ x - b) + bias + noise

    return f, surrogate


def _es(alpha, lr):
    f, surrogate = _quadratic()
    x = torch.zeros(N_FIG1, dtype=torch.float64)
    opt = GuidedES([x], lr=lr, sigma=0.01, popsize=2, alpha=alpha, beta=2.0, seed=0)
    gen = torch.Generator().manual_seed(1)
    while opt.num_evals < EVALS:
        if alpha < 1:
            x.grad = surrogate(x.detach(), gen)
        opt.step(lambda pop: f(pop.flat))
    return float(f(x))


def _descent_on_the_surrogate(lr):
    f, surrogate = _quadratic()
    x = torch.zeros(N_FIG1, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    for _ in range(EVALS):  # one surrogate gradient per evaluation the ES spends
        x = x - lr * surrogate(x, gen)
    return float(f(x))


@pytest.mark.filterwarnings("ignore:GuidedES. no surrogate")
def test_figure_1_guided_es_beats_plain_es_and_descent_on_the_biased_gradient():
    # measured (seed 0): f(0) = 106; Guided ES (alpha 0.5, beta 2, k 1, one pair) 0.37;
    # descent on the biased gradient, best lr of 4: 0.71 (its floor: the bias moves the
    # fixed point); plain antithetic ES (alpha = 1), best lr of 3: 11.0
    guided = _es(0.5, lr=0.2)
    plain = min(_es(1.0, lr) for lr in (0.2, 0.5, 1.0))
    descent = min(_descent_on_the_surrogate(lr) for lr in (0.05, 0.1, 0.2, 0.5))
    assert guided < 0.75 * descent
    assert guided < 0.1 * plain


# ------------------------------------------------------------------ the surrogate
def test_without_a_surrogate_it_is_plain_antithetic_es_and_says_so_once():
    x = torch.full((5,), 1.0, dtype=torch.float64)
    opt = GuidedES([x], sigma=0.3, popsize=4, alpha=0.2, seed=3)
    gen = torch.Generator().manual_seed(3)
    with pytest.warns(RuntimeWarning, match="no surrogate gradient .* plain antithetic ES"):
        pop = opt.ask()
    eps = 0.3 * torch.randn(2, 5, generator=gen, dtype=torch.float64)  # alpha = 1: z only
    torch.testing.assert_close(pop.flat, torch.cat([1.0 + eps, 1.0 - eps]), rtol=0, atol=0)
    opt.tell(sphere(pop.flat))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        opt.step(lambda pop: sphere(pop.flat))


def test_the_width_follows_the_surrogate_subspace():
    n, sigma, alpha = 8, 0.5, 0.25
    x = torch.zeros(n, dtype=torch.float64)
    opt = GuidedES([x], sigma=sigma, popsize=20_000, alpha=alpha, seed=0)
    x.grad = torch.zeros(n, dtype=torch.float64)
    x.grad[2] = -3.0  # U = e_2 (up to sign)
    pop = opt.ask()
    std = pop.flat.std(0)
    # Sigma_22 = alpha / n + (1 - alpha), the others alpha / n; times sigma^2 n
    assert float(std[2]) == pytest.approx(sigma * math.sqrt(alpha + n * (1 - alpha)), rel=0.03)
    others = torch.cat([std[:2], std[3:]])
    torch.testing.assert_close(others, torch.full_like(others, sigma * math.sqrt(alpha)),
                               rtol=0.03, atol=0)
    opt.tell(sphere(pop.flat))
    assert opt.current_sigma == pytest.approx(sigma)  # trace(Sigma) = 1: the RMS is sigma


def test_only_the_last_k_surrogates_span_the_subspace():
    n = 5
    x = torch.zeros(n, dtype=torch.float64)
    opt = GuidedES([x], popsize=2, subspace_dim=2, seed=0)
    for i in range(3):
        x.grad = torch.eye(n, dtype=torch.float64)[i] * (i + 1)
        opt.step(lambda pop: sphere(pop.flat))
    U = opt.basis()
    assert U.shape == (n, 2)
    torch.testing.assert_close(U.abs().sum(1), torch.tensor([0, 1.0, 1, 0, 0],
                                                            dtype=torch.float64))


def test_exact_resume_with_surrogates():
    def fresh(seed):
        x = torch.full((6,), 0.5, dtype=torch.float64)
        return x, GuidedES([x], popsize=6, subspace_dim=2, seed=seed)

    def gen_step(x, opt, t):
        x.grad = torch.sin(torch.arange(6.0, dtype=torch.float64) + t)
        return float(opt.step(lambda pop: _rosenbrock(pop.flat)))

    x, opt = fresh(1)
    for t in range(3):
        gen_step(x, opt, t)
    ckpt = roundtrip(opt.state_dict())
    expected = [(gen_step(x, opt, t), x.clone()) for t in range(3, 6)]
    x2, opt2 = fresh(99)
    opt2.load_state_dict(ckpt)
    for t, (loss, xe) in zip(range(3, 6), expected):
        assert gen_step(x2, opt2, t) == loss
        assert torch.equal(x2, xe)


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=1.5), r"Invalid alpha: 1.5 \(expected a number in \[0.0, 1.0\]\)"),
    (dict(alpha=-0.1), r"Invalid alpha: -0.1"),
    (dict(beta=0.0), r"Invalid beta: 0.0 \(expected a finite number > 0\)"),
    (dict(subspace_dim=0), r"Invalid subspace_dim: 0 \(expected an integer >= 1\)"),
    (dict(subspace_dim=1.5), r"Invalid subspace_dim: 1.5"),
    (dict(lr=-1.0), r"Invalid lr: -1.0"),
    (dict(sigma=0.0), r"Invalid sigma: 0.0"),
    (dict(popsize=3), r"Invalid popsize: 3 \(expected an even integer"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GuidedES([torch.zeros(3)], **kwargs)


def test_a_non_finite_surrogate_is_refused_and_changes_nothing():
    x = torch.zeros(3, dtype=torch.float64)
    opt = GuidedES([x], popsize=2, seed=0)
    x.grad = torch.tensor([1.0, math.nan, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="Invalid surrogate gradient: p.grad has NaN"):
        opt.step(lambda pop: sphere(pop.flat))
    st = opt.state["population"]
    assert st["num_surrogates"] == 0 and not st["surrogates"].any() and opt.generation == 0
    x.grad = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    opt.step(lambda pop: sphere(pop.flat))
    assert opt.state["population"]["num_surrogates"] == 1 and opt.generation == 1


def test_the_torch_loop_reads_the_proxy_gradient_and_trains_a_model():
    # the documented loop: backward on a differentiable proxy (here: the loss on a biased
    # subset of the data), then step with the true loss as a zero-argument closure
    torch.manual_seed(0)
    X, w_true = torch.randn(256, 8), torch.randn(8, 1)
    y = X @ w_true
    model = torch.nn.Linear(8, 1, bias=False)
    opt = GuidedES(model.parameters(), lr=0.5, sigma=0.01, popsize=4, seed=0)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X), y)
        if torch.is_grad_enabled():
            loss.backward()
        return loss

    with torch.no_grad():
        start = float(closure())
    for _ in range(100):
        opt.zero_grad()
        proxy = torch.nn.functional.mse_loss(model(X[:16]), y[:16] + 0.3)  # biased surrogate
        proxy.backward()
        opt.step(closure)
    assert opt.state["population"]["num_surrogates"] == 1
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        end = float(closure())
    assert end < 0.01 * start  # measured: 1.5e-3 of the start (100 steps, 400 evals)
