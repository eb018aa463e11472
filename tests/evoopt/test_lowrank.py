"""Low-rank OpenAI-ES (EGGROLL): the estimator against a dense float64 reference, its
mean against the dense expectation, the factored forward against materialised members,
memory at 50M parameters, exact resume, bad input."""

import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import evoopt
from evoopt.evaluation import batched_forward, loop_objective, vmap_objective
from evoopt.lowrank import (
    FactoredPopulation,
    LowRankPlan,
    factored_gradient,
    member_noise,
    sample_factored,
)

from ._helpers import centered_rank_reference as centered_rank
from ._helpers import roundtrip


class Block(nn.Module):
    """A small transformer block: embedding, LayerNorm, causal attention within a sample
    (q, k, v from one Linear), a residual, a Linear head."""

    def __init__(self, vocab=11, d=8, heads=2):
        super().__init__()
        self.emb, self.ln = nn.Embedding(vocab, d), nn.LayerNorm(d)
        self.qkv, self.out, self.head = nn.Linear(d, 3 * d), nn.Linear(d, d), nn.Linear(d, vocab)
        self.heads = heads

    def forward(self, x):
        e = self.emb(x)
        *lead, T, d = e.shape
        q, k, v = (t.reshape(-1, T, self.heads, d // self.heads).transpose(1, 2)
                   for t in self.qkv(self.ln(e)).split(d, -1))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)
        return self.head(e + self.out(a.reshape(*lead, T, d)))


def make(name):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "mlp":
        m = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
        x = torch.randn(4, 5, generator=gen)
    elif name == "block":
        m, x = Block(), torch.randint(0, 11, (3, 6), generator=gen)
    elif name == "conv2d":
        m = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 2, stride=2),
                          nn.Flatten(), nn.Linear(16, 3))
        x = torch.randn(2, 2, 4, 4, generator=gen)
    else:  # conv1d
        m, x = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh()), torch.randn(2, 2, 7, generator=gen)
    return m.double(), (x.double() if x.is_floating_point() else x)


def member_outputs(model, pop, x, per_member=False):
    """The reference: materialise each member and run the model on its input."""
    names = [n for n, _ in model.named_parameters()]
    return torch.stack([
        functional_call(model, dict(zip(names, pop.layout.unflatten(pop.flat[i]))),
                        (x[i] if per_member else x,))
        for i in range(pop.popsize)])


def dense_noise(plan, seed, generation, half):
    """[half, D] float64: each pair's eps written out densely from its noise row."""
    rows = []
    for h in range(half):
        z = member_noise(plan, seed, generation, h, dtype=torch.float64)
        parts = []
        for i, shape in enumerate(plan.layout.shapes):
            s = plan.by_index[i]
            if len(shape) >= 2:
                m, n, r = s.m, s.n, s.r
                A = z[s.a_off:s.a_off + m * r].view(m, r)
                B = z[s.a_off + m * r:s.a_off + (m + n) * r].view(n, r)
                parts.append((A @ B.T / math.sqrt(r)).reshape(-1))
            else:
                parts.append(z[s.off:s.off + s.numel])
        rows.append(torch.cat(parts))
    return torch.stack(rows)


# ------------------------------------------------------------------------ estimator
@pytest.mark.parametrize("rank", [1, 2, 4])  # 4 = min(m, n) of every matrix here
def test_members_and_estimate_equal_a_dense_float64_reference(rank):
    P, H, seed, lr = 8, 4, 5, 0.1
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 4)).double()
    groups = [{"params": list(model[0].parameters()), "sigma": 0.1},
              {"params": list(model[2].parameters()), "sigma": 0.3}]
    opt = evoopt.OpenAIES(groups, lr=lr, popsize=P, rank=rank, seed=seed, weight_decay=0.0,
                          optimizer=torch.optim.SGD)
    center = opt.layout.flatten().clone()
    sigma = torch.cat([torch.full((30,), 0.1, dtype=torch.float64),
                       torch.full((28,), 0.3, dtype=torch.float64)])
    pop = opt.ask()
    eps = dense_noise(opt._plan, seed, 0, H)
    noise = torch.cat([eps, -eps])
    torch.testing.assert_close(pop.flat, center + sigma * noise, rtol=0, atol=1e-14)
    losses = torch.randn(P, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    opt.tell(losses)
    shaped = centered_rank(losses)
    grad = sum(shaped[i] * noise[i] for i in range(P)) / (P * sigma)
    got = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(got, grad, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(opt.mean, center - lr * grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rank", [1, 3])
def test_low_rank_mean_over_generations_matches_the_dense_expectation(rank):
    """Statistical test: for a linear loss c . theta with raw (unshaped) mirrored
    differences, the dense estimator's expectation is c exactly (Cov(eps) = I), and so is
    the low-rank one's (every entry of A B^T / sqrt(r) has variance 1, distinct entries
    are uncorrelated). Over N = 1000 generations of P = 8 the mean of the estimates must
    be within 4.5 standard errors (the per-generation estimates' sample std / sqrt(N)) of
    c in every one of the D = 42 coordinates: a false alarm has probability about
    42 * 6.8e-6 < 3e-4 under the null (the run is seeded, so the outcome is fixed), while
    a scale off by sqrt(3) (a missing 1 / sqrt(r) at rank 3) is off by > 10 standard
    errors in the largest coordinates."""
    model = nn.Sequential(nn.Linear(5, 6), nn.Linear(6, 1)).double()
    layout = evoopt.ParamLayout(list(model.parameters()))
    plan, D, P, N, sigma = LowRankPlan(layout, rank), layout.num_params, 8, 1000, 0.5
    c = torch.linspace(-1.0, 1.0, D, dtype=torch.float64)
    center = torch.zeros(D, dtype=torch.float64)
    est = torch.empty(N, D, dtype=torch.float64)
    for g in range(N):
        pop = sample_factored(plan, center, [sigma] * len(layout.shapes), P, 7, g)
        f = pop.flat @ c
        est[g] = factored_gradient(pop, f[:P // 2] - f[P // 2:])
    z = (est.mean(0) - c) / (est.std(0) / math.sqrt(N))
    assert float(z.abs().max()) < 4.5


# ------------------------------------------------------------------- factored forward
@pytest.mark.parametrize("name", ["mlp", "block", "conv2d", "conv1d"])
@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_factored_forward_equals_materialised_members(name, rank, chunk_size):
    model, x = make(name)
    opt = evoopt.OpenAIES(model.parameters(), popsize=6, rank=rank, sigma=0.3, seed=2)
    pop = opt.ask()
    ref = member_outputs(model, pop, x)
    with torch.no_grad():
        got = batched_forward(model, pop, x, chunk_size=chunk_size)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["mlp", "block"])
def test_factored_forward_with_per_member_inputs(name):
    model, x = make(name)
    opt = evoopt.OpenAIES(model.parameters(), popsize=4, rank=2, sigma=0.3, seed=3)
    pop = opt.ask()
    xs = torch.stack([x.roll(i, 0) for i in range(4)])  # member i sees its own batch
    ref = member_outputs(model, pop, xs, per_member=True)
    torch.testing.assert_close(batched_forward(model, pop, xs, per_member_inputs=True), ref,
                               rtol=0, atol=1e-10)
    one = xs[:, 0]  # one unbatched input per member
    ref1 = member_outputs(model, pop, one, per_member=True)
    torch.testing.assert_close(batched_forward(model, pop, one, per_member_inputs=True), ref1,
                               rtol=0, atol=1e-10)


def test_vmap_and_loop_objectives_equal_the_materialised_losses():
    model, x = make("block")
    y = torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(1))
    opt = evoopt.OpenAIES(model.parameters(), popsize=6, rank=2, sigma=0.3, seed=4)
    pop = opt.ask()

    def loss_fn(out, y):
        return F.cross_entropy(out.reshape(-1, 11), y.reshape(-1))

    ref = torch.stack([loss_fn(o, y) for o in member_outputs(model, pop, x)])
    for objective in (vmap_objective(model, loss_fn, x, y),
                      vmap_objective(model, loss_fn, x, y, chunk_size=4),
                      loop_objective(model, loss_fn, x, y)):
        torch.testing.assert_close(objective(pop), ref, rtol=0, atol=1e-10)


def test_unhandled_module_falls_back_to_materialising_with_a_warning():
    class Scale(nn.Module):  # owns a searched parameter the factored forward does not know
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.s

    model = nn.Sequential(nn.Linear(5, 3), Scale()).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    opt = evoopt.OpenAIES(model.parameters(), popsize=6, rank=2, sigma=0.3, seed=2)
    pop = opt.ask()
    with pytest.warns(RuntimeWarning, match="materialised"):
        got = batched_forward(model, pop, x, chunk_size=4)
    torch.testing.assert_close(got, member_outputs(model, pop, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_factored_forward_in_low_precision_is_close_to_float64(dtype):
    """The factored forward in float32 / bfloat16 against the float64 forward of the
    same members (the noise is drawn in the parameters' dtype)."""
    model, x = make("block")
    low = make("block")[0].to(dtype)
    pop = evoopt.OpenAIES(low.parameters(), popsize=4, rank=2, sigma=0.1, seed=1).ask()
    dense = evoopt.Population(pop.flat.double(), evoopt.ParamLayout(list(model.parameters())))
    ref = member_outputs(model, dense, x)
    got = batched_forward(low, pop, x)
    assert got.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 0.15
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=tol)


# ------------------------------------------------------------------ the optimizer
def test_step_with_closure_equals_step_with_objective_and_best_is_the_best_row():
    model, x = make("mlp")
    y = torch.randint(0, 3, (4,), generator=torch.Generator().manual_seed(0))
    model2, _ = make("mlp")
    a = evoopt.OpenAIES(model.parameters(), popsize=6, rank=2, seed=9)
    b = evoopt.OpenAIES(model2.parameters(), popsize=6, rank=2, seed=9)
    for _ in range(3):
        a.step(vmap_objective(model, F.cross_entropy, x, y))
        b.step(lambda: F.cross_entropy(model2(x), y))
        torch.testing.assert_close(a.mean, b.mean, rtol=1e-12, atol=1e-14)
    pop = a.ask()
    losses = vmap_objective(model, F.cross_entropy, x, y)(pop)
    a.tell(losses)
    if a.last.best_loss == a.best_loss:
        torch.testing.assert_close(a.best, pop.row(int(losses.argmin())), rtol=0, atol=0)


def test_exact_resume_through_torch_load_weights_only():
    def run(opt, model, n):
        x = torch.linspace(-1, 1, 20, dtype=torch.float64).view(4, 5)
        y = torch.tensor([0, 1, 2, 1])
        for _ in range(n):
            opt.step(vmap_objective(model, F.cross_entropy, x, y))

    model, _ = make("mlp")
    ref = evoopt.OpenAIES(model.parameters(), popsize=8, rank=2, seed=3, lr=0.05)
    run(ref, model, 5)
    ref_pop = ref.ask().flat

    model2, _ = make("mlp")
    opt = evoopt.OpenAIES(model2.parameters(), popsize=8, rank=2, seed=3, lr=0.05)
    run(opt, model2, 2)
    sd = roundtrip(opt.state_dict())
    assert not any(isinstance(v, torch.Tensor) and v.numel() > 100
                   for v in sd["state"]["population"].values())  # no noise in the checkpoint
    model3, _ = make("mlp")
    resumed = evoopt.OpenAIES(model3.parameters(), popsize=8, rank=2, seed=99, lr=0.05)
    resumed.load_state_dict(sd)
    run(resumed, model3, 3)
    assert torch.equal(resumed.mean, ref.mean)
    assert torch.equal(resumed.ask().flat, ref_pop)


def test_a_member_is_rebuilt_from_three_integers():
    model, _ = make("mlp")
    opt = evoopt.OpenAIES(model.parameters(), popsize=6, rank=2, seed=4, sigma=0.2)
    pop = opt.ask()
    z = member_noise(opt._plan, 4, 0, 1, dtype=torch.float64)
    assert torch.equal(pop.noise[1], z)
    assert torch.equal(pop.row(4), pop.flat[4])  # member 4 = pair 1, mirrored


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("rank,match", [
    (0, r"Invalid rank: 0 \(expected an integer >= 1\)"),
    (-2, r"Invalid rank: -2"),
    (1.5, r"Invalid rank: 1.5"),
    (True, r"Invalid rank: True"),
])
def test_bad_rank_is_refused(rank, match):
    with pytest.raises(ValueError, match=match):
        evoopt.OpenAIES(nn.Linear(3, 2).parameters(), rank=rank)


def test_rank_on_parameters_without_matrices_is_refused():
    match = r"Invalid rank: 2 \(low-rank sampling factors .* \[\[5\], \[\]\]"
    with pytest.raises(ValueError, match=match):
        evoopt.OpenAIES([torch.zeros(5), torch.zeros(())], rank=2)


def test_checkpoint_of_another_rank_is_refused():
    a = evoopt.OpenAIES(nn.Linear(3, 2).parameters(), popsize=4, rank=1, seed=0)
    a.step(lambda pop: pop.flat.pow(2).sum(1))
    b = evoopt.OpenAIES(nn.Linear(3, 2).parameters(), popsize=4, rank=2, seed=0)
    with pytest.raises(ValueError, match="saved rank=1, this optimizer has rank=2"):
        b.load_state_dict(a.state_dict())


def test_objective_that_cannot_use_a_factored_population_gets_a_clear_error(monkeypatch):
    model, _ = make("mlp")
    opt = evoopt.OpenAIES(model.parameters(), popsize=6, rank=1, seed=0)
    monkeypatch.setattr(FactoredPopulation, "materialize_limit", 1000)
    mean = opt.mean.clone()
    with pytest.raises(ValueError, match=r"Invalid use of a factored population: pop.flat would "
                                         r"materialise 6 x 66 numbers"):
        opt.step(lambda pop: pop.flat.pow(2).sum(1))
    assert torch.equal(opt.mean, mean) and opt.generation == 0


class SeqFirst(nn.Module):
    """Batch-first to sequence-first: the rows leave dim 0."""

    def forward(self, x):
        return x.transpose(0, 1)


@pytest.mark.parametrize("model,match", [
    (nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)),
     "BatchNorm1d.*training mode"),
    (nn.Sequential(nn.Linear(5, 4), SeqFirst(), nn.Linear(4, 3)),
     r"Linear got an input of shape \(3, 24, 4\), but the members' 24 rows must stay in dim 0"),
])
def test_models_that_mix_members_rows_are_refused(model, match):
    model = model.double()
    pop = evoopt.OpenAIES(model.parameters(), popsize=4, rank=1, seed=0).ask()
    with pytest.raises(ValueError, match=match):
        batched_forward(model, pop, torch.randn(6, 3, 5, dtype=torch.float64))


# ------------------------------------------------------------------------- memory
MEMORY_SCRIPT = textwrap.dedent("""
    import resource, time, torch, torch.nn as nn, torch.nn.functional as F, evoopt
    from evoopt.tasks import init_uniform_
    from evoopt.tasks.base import build_uninitialized
    torch.set_num_threads(1)
    W = 5000
    model = init_uniform_(build_uninitialized(lambda: nn.Sequential(
        nn.Linear(512, W), nn.Tanh(), nn.Linear(W, W), nn.Tanh(), nn.Linear(W, W), nn.Tanh(),
        nn.Linear(W, 10))), 0)
    D = sum(p.numel() for p in model.parameters())
    x, y = torch.randn(2, 512), torch.tensor([1, 2])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    opt = evoopt.OpenAIES(model.parameters(), popsize=256, rank=1, seed=0)
    pop = opt.ask()
    losses = evoopt.vmap_objective(model, F.cross_entropy, x, y)(pop)
    opt.tell(losses)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(D, base * 1024, peak * 1024, time.perf_counter() - t)
""")


@pytest.mark.slow
def test_50m_parameter_generation_stays_under_a_stated_peak():
    """ask + evaluate (256 members x 2 rows) + tell on a 50.6M-parameter MLP: peak RSS
    under 2.5 GiB (model 0.2 GB, Adam's moments 0.4 GB, center/best/gradient vectors;
    a dense [256, D] population alone would be 52 GB)."""
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    D, base, peak = int(out[0]), int(out[1]), int(out[2])
    assert D > 50_000_000
    assert peak < 2.5 * 2**30, f"peak RSS {peak / 2**30:.2f} GiB"
    assert peak - base < 2.0 * 2**30


# -------------------------------------------------------------------------- Ray
class RowLoss:
    """A row objective (a picklable factory for Ray's actors): the MLP's cross-entropy of
    each dense row, member by member."""

    is_population_objective = True

    def __init__(self):
        self.model, self.x = make("mlp")
        self.y = torch.tensor([0, 1, 2, 1])
        self.names = [n for n, _ in self.model.named_parameters()]
        self.layout = evoopt.ParamLayout(list(self.model.parameters()))

    def __call__(self, pop):
        def loss(row):
            params = dict(zip(self.names, self.layout.unflatten(row)))
            return F.cross_entropy(functional_call(self.model, params, (self.x,)), self.y)

        return torch.stack([loss(r) for r in pop.flat])


@pytest.mark.ray
def test_ray_evaluator_ships_the_factors_and_gives_equal_numbers():
    """RayEvaluator puts the factored population in Ray's store once per generation and each
    chunk carries member indices (the actors build their rows from the factors): the same
    numbers as in process, with 1 and 3 actors."""
    ray = pytest.importorskip("ray")
    from evoopt.distributed import RayEvaluator, _rows_of

    model, _ = make("mlp")
    pop = evoopt.OpenAIES(model.parameters(), popsize=6, rank=2, seed=5).ask()
    source, _ = _rows_of(pop)
    assert source is pop  # not a [P, D] array

    def run(objective):
        model, _ = make("mlp")
        opt = evoopt.OpenAIES(model.parameters(), popsize=6, rank=2, seed=5, lr=0.05)
        for _ in range(3):
            opt.step(objective)
        return opt.mean

    ref = run(RowLoss())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for n in (1, 3):
            with RayEvaluator(RowLoss, num_actors=n, num_cpus_per_actor=0.5) as ev:
                assert torch.equal(run(ev), ref)
    finally:
        ray.shutdown()


# ------------------------------------------------------------------------ charlm
def test_charlm_text_is_the_stdlib_read_at_run_time_and_the_baseline_is_the_unigram():
    import sysconfig
    from pathlib import Path

    from evoopt.tasks import TASKS, get_task
    from evoopt.tasks.charlm import load_stdlib_text

    first = min(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")).read_bytes()
    ascii_ = bytes(b for b in first if b < 128)[:500]
    assert load_stdlib_text(20_000)[:len(ascii_)].tolist() == list(ascii_)
    task = TASKS["charlm"](num_chars=20_000, num_train=512, num_test=256)
    x, y, xt, yt, uni, logp = task.data
    assert x.shape == (512, 8) and xt.shape == (256, 8) and int(x.max()) < 128
    text = load_stdlib_text(20_000)  # windows end at evenly spaced positions, the last at the end
    assert torch.equal(x[0], text[:8]) and int(y[0]) == int(text[8])
    assert torch.equal(xt[-1], text[-9:-1]) and int(yt[-1]) == int(text[-1])
    counts = torch.bincount(text[:18_000], minlength=128).double() + 1
    assert uni == pytest.approx(float(-(counts / counts.sum()).log()[text[18_008:]].mean()))
    model = task.make_model(0)  # starts at the unigram model (output bias = log-frequencies)
    assert torch.equal(model[-1].bias, logp)
    with pytest.raises(ValueError, match=r"Invalid size: 'huge' \(expected one of"):
        get_task("charlm", size="huge")


def test_low_rank_openai_es_trains_charlm_below_the_unigram_baseline():
    """CI-sized: 13.5k parameters, P = 32, rank 1, 120 generations of 256-window
    minibatches (about 15 s on one contended CPU core)."""
    from evoopt.tasks import get_task

    torch.set_num_threads(1)
    task = get_task("charlm", size="tiny")
    model = task.make_model(0)
    start = task.metrics(model)["test_loss"]
    opt = evoopt.OpenAIES(model.parameters(), popsize=32, lr=0.01, sigma=0.05,
                          weight_decay=0.0, rank=1, seed=0)
    objective = task.population_objective(model)
    for _ in range(120):
        opt.step(objective)
    m = task.metrics(model)
    assert start > m["unigram_loss"] - 0.05  # it starts near the baseline ...
    assert m["test_loss"] < m["unigram_loss"] - 0.15  # ... and learns to use the context
