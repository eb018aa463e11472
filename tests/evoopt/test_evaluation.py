"""Batched population evaluation (evoopt.evaluation): vmap_objective / batched_forward
against a plain per-member loop that loads each member into the model and calls it."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import evoopt  # noqa: F401 - registers the algorithms
from evoopt import _fastpath
from evoopt.evaluation import batched_forward, loop_objective, vmap_objective
from evoopt.population import ParamLayout, Population, PopulationOptimizer, is_population_objective
from evoopt.registry import population_optimizers

from ._helpers import REQUIRED_KWARGS

P = 12


class GaussES(PopulationOptimizer):
    """mean <- mean - lr * mean_i(u_i * eps_i) / sigma: a plain linear ES update (no ranking),
    so a loss difference between two evaluators would show up in the step."""

    def __init__(self, params, popsize=P, sigma=0.1, lr=0.05, seed=None):
        super().__init__(params, dict(sigma=sigma, lr=lr), popsize=popsize, seed=seed)

    def _init_state(self, st, mean):
        pass

    def _sample(self, st, gen):
        eps = self._randn(self.popsize, self.num_params)
        return st["mean"] + self.group_values("sigma") * eps, eps

    def _update(self, st, u, rows, eps):
        g = (u[:, None] * eps).mean(0) / self.group_values("sigma")
        st["mean"] = st["mean"] - self.group_values("lr") * g


def _population(model, popsize=P, scale=0.3, seed=0, params=None):
    layout = ParamLayout(list(model.parameters()) if params is None else params)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(popsize, layout.num_params, generator=g, dtype=layout.params[0].dtype)
    return Population(layout.flatten()[None] + scale * noise, layout)


def _reference_losses(model, pop, loss_fn, *inputs, k=1):
    """Load member i into a copy of the model in place and call it: the plain loop."""
    clone = copy.deepcopy(model)
    by_id = {id(p): n for n, p in model.named_parameters()}
    own = dict(clone.named_parameters())
    layout = ParamLayout([own[by_id[id(p)]] for p in pop.layout.params])
    out = []
    with torch.no_grad():
        for i in range(pop.popsize):
            layout.load_(pop.flat[i])
            out.append(loss_fn(clone(*inputs[:k]), *inputs[k:]))
    return torch.stack(out)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3))


def _cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(32, 5),
    )


def _cls_data(shape, classes, n=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("make, shape, classes", [(_mlp, (6,), 3), (_cnn, (1, 8, 8), 5)])
def test_vmap_objective_equals_per_member_loop(make, shape, classes):
    model = make()
    before = ParamLayout(list(model.parameters())).flatten().clone()
    x, y = _cls_data(shape, classes)
    pop = _population(model)
    objective = vmap_objective(model, F.cross_entropy, x, y)
    assert is_population_objective(objective)
    losses = objective(pop)
    ref = _reference_losses(model, pop, F.cross_entropy, x, y)
    assert losses.shape == (P,)
    assert float(losses.std()) > 0.01  # the members really differ
    torch.testing.assert_close(losses, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(loop_objective(model, F.cross_entropy, x, y)(pop), ref,
                               atol=1e-5, rtol=0)
    assert torch.equal(ParamLayout(list(model.parameters())).flatten(), before)  # model untouched


@pytest.mark.parametrize("chunk_size", [1, 5, P, 100])
def test_chunked_equals_unchunked(chunk_size):
    model = _cnn()
    x, y = _cls_data((1, 8, 8), 5)
    pop = _population(model)
    full = vmap_objective(model, F.cross_entropy, x, y)(pop)
    chunked = vmap_objective(model, F.cross_entropy, x, y, chunk_size=chunk_size)(pop)
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=0)


def test_float64_follows_the_parameters_and_casts_float_inputs():
    model = _mlp().double()
    x, y = _cls_data((6,), 3)  # float32 inputs
    pop = _population(model)
    losses = vmap_objective(model, F.cross_entropy, x, y)(pop)
    assert losses.dtype == torch.float64
    ref = _reference_losses(model, pop, F.cross_entropy, x.double(), y)
    torch.testing.assert_close(losses, ref, atol=1e-12, rtol=0)


def test_step_with_vmap_objective_equals_step_with_closure():
    x, y = _cls_data((6,), 3, n=32)
    results = []
    for mode in ("closure", "vmap"):
        model = _mlp()
        opt = GaussES(model.parameters(), seed=3)
        objective = vmap_objective(model, F.cross_entropy, x, y)

        def closure():
            return F.cross_entropy(model(x), y)

        losses = [float(opt.step(closure if mode == "closure" else objective)) for _ in range(3)]
        results.append((losses, ParamLayout(list(model.parameters())).flatten(), opt.last.losses))
    (l0, p0, m0), (l1, p1, m1) = results
    assert l0 == pytest.approx(l1, abs=1e-6)
    torch.testing.assert_close(m1, m0, atol=1e-5, rtol=0)
    torch.testing.assert_close(p1, p0, atol=1e-5, rtol=0)
    # it moved
    assert float((p0 - ParamLayout(list(_mlp().parameters())).flatten()).abs().max()) > 1e-3


@pytest.mark.parametrize("name", sorted(population_optimizers()))
def test_registered_optimizers_step_the_same_with_vmap_objective_and_closure(name):
    x, y = _cls_data((6,), 3, n=32)
    results = []
    for use_objective in (False, True):
        torch.manual_seed(0)
        # D = 43: cheap for full-covariance methods
        model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))
        opt = population_optimizers()[name](model.parameters(), popsize=8, seed=0,
                                            **REQUIRED_KWARGS.get(name, {}))
        objective = vmap_objective(model, F.cross_entropy, x, y)
        for _ in range(3):
            opt.step(objective if use_objective else (lambda: F.cross_entropy(model(x), y)))
        results.append(ParamLayout(list(model.parameters())).flatten())
    torch.testing.assert_close(results[1], results[0], atol=1e-5, rtol=0)


def test_partial_population_frozen_and_tied_parameters_are_shared():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Tanh(), nn.Linear(4, 8), nn.Tanh(),
                          nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 4, bias=False))
    model[6].weight = model[0].weight  # tied: one parameter used twice
    model[2].bias.requires_grad_(False)
    x = torch.randn(10, 4)
    y = torch.randn(10, 4)
    # the optimizer owns the tied weight and layer 2's weight only (a subset, out of order);
    # layer 4 and layer 2's bias stay the model's own, shared by all members
    pop = _population(model, params=[model[2].weight, model[0].weight])
    losses = vmap_objective(model, F.mse_loss, x, y)(pop)
    ref = _reference_losses(model, pop, F.mse_loss, x, y)
    torch.testing.assert_close(losses, ref, atol=1e-5, rtol=0)


def test_eval_mode_batchnorm_uses_running_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(48, 2))
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2.0)
    model.eval()
    x, y = _cls_data((1, 6, 6), 2)
    pop = _population(model)
    losses = vmap_objective(model, F.cross_entropy, x, y, chunk_size=5)(pop)
    torch.testing.assert_close(losses, _reference_losses(model, pop, F.cross_entropy, x, y),
                               atol=1e-5, rtol=0)


def test_reduce_and_model_and_loss_input_split():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(5, 2)

        def forward(self, u, v):
            return self.a(u) * self.b(v)

    torch.manual_seed(0)
    model = TwoInputs()
    u, v, t = torch.randn(7, 3), torch.randn(7, 5), torch.randn(7, 2)
    pop = _population(model)

    def sq(out, target):
        return (out - target) ** 2  # not reduced: [7, 2] per member

    for reduce, ref_fn in [("mean", F.mse_loss),
                           ("sum", lambda o, t: F.mse_loss(o, t, reduction="sum"))]:
        losses = vmap_objective(model, sq, u, v, t, num_model_inputs=2, reduce=reduce)(pop)
        torch.testing.assert_close(losses, _reference_losses(model, pop, ref_fn, u, v, t, k=2),
                                   atol=1e-5, rtol=0)


def test_model_without_inputs_black_box():
    class Point(nn.Module):
        def __init__(self):
            super().__init__()
            self.x = nn.Parameter(torch.tensor([1.0, 2.0]))

        def forward(self):
            return self.x

    model = Point()
    pop = _population(model)
    losses = vmap_objective(model, lambda z: (z**2).sum(), num_model_inputs=0)(pop)
    torch.testing.assert_close(losses, (pop.flat**2).sum(1))


def test_dropout_randomness_modes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.Dropout(0.5), nn.Linear(32, 3)).train()
    x, y = _cls_data((6,), 3)
    layout = ParamLayout(list(model.parameters()))
    same_members = Population(layout.flatten().expand(6, -1).clone(), layout)
    with pytest.raises(ValueError, match="randomness='different'"):
        vmap_objective(model, F.cross_entropy, x, y)(same_members)
    torch.manual_seed(5)
    same = vmap_objective(model, F.cross_entropy, x, y, randomness="same")(same_members)
    assert float(same.max() - same.min()) == 0.0  # one dropout mask for all members
    torch.manual_seed(5)
    same_chunked = vmap_objective(model, F.cross_entropy, x, y, randomness="same",
                                  chunk_size=4)(same_members)
    torch.testing.assert_close(same_chunked, same)
    diff = vmap_objective(model, F.cross_entropy, x, y, randomness="different")(same_members)
    assert float(diff.max() - diff.min()) > 1e-3  # independent masks


def test_batched_forward_shared_and_per_member_inputs():
    model = _mlp()
    pop = _population(model)
    obs = torch.randn(P, 6)  # one observation per member (RL)
    out = batched_forward(model, pop, obs, per_member_inputs=True)
    assert out.shape == (P, 3)
    all_obs = _reference_losses(model, pop, lambda o: o, obs)  # member i on every observation
    torch.testing.assert_close(out, all_obs[torch.arange(P), torch.arange(P)], atol=1e-5, rtol=0)
    x = torch.randn(9, 6)
    shared = batched_forward(model, pop, x)
    torch.testing.assert_close(shared, _reference_losses(model, pop, lambda o: o, x),
                               atol=1e-5, rtol=0)
    by_name = dict(zip([n for n, _ in model.named_parameters()], pop.tensors()))
    torch.testing.assert_close(batched_forward(model, by_name, x, chunk_size=5), shared,
                               atol=1e-6, rtol=0)


def _generic_vmap(model, pop, x, per_member):
    """torch.func.vmap over functional_call, written out: the reference for the MLP path."""
    names = {id(p): n for n, p in model.named_parameters()}
    params = {names[id(p)]: t for p, t in zip(pop.layout.params, pop.tensors())}
    f = torch.func.vmap(lambda p, x: torch.func.functional_call(model, p, (x,)),
                        in_dims=(0, 0 if per_member else None))
    return f(params, x)


@pytest.mark.parametrize("owned", ["all", "middle bias", "first layer", "last weight"])
@pytest.mark.parametrize("per_member, shape",
                         [(False, (6,)), (False, (2, 5, 6)), (True, (P, 6)), (True, (P, 4, 6))])
def test_mlp_batched_matmul_path_equals_generic_vmap(owned, per_member, shape, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(6, 16), nn.ELU(), nn.Linear(16, 8),
                          nn.Tanh(), nn.Linear(8, 3))
    params = {"all": list(model.parameters()), "middle bias": [model[3].bias],
              "first layer": [model[1].weight, model[1].bias],
              "last weight": [model[5].weight]}[owned]
    pop = _population(model, params=params)
    x = torch.randn(*shape)
    x_before = x.clone()
    out = batched_forward(model, pop, x, per_member_inputs=per_member)
    assert torch.equal(x, x_before)  # the in-place ReLU did not touch the caller's input
    ref = _generic_vmap(model, pop, x, per_member)
    assert out.shape == ref.shape == (P, *shape[1 if per_member else 0:-1], 3)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        batched_forward(model, pop, x, per_member_inputs=per_member, chunk_size=5),
        ref, atol=1e-5, rtol=0)
    monkeypatch.setattr(_fastpath, "_CACHE_BYTES", 200)  # cache-sized chunks of 1-3 members
    torch.testing.assert_close(batched_forward(model, pop, x, per_member_inputs=per_member), ref,
                               atol=1e-5, rtol=0)


def _convnets():
    """Conv nets the Sequential fast path takes (name -> (model, per-member input shape))."""
    torch.manual_seed(0)
    return {
        "lenet": (nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 4, 3, padding=1),
                                nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.Tanh(),
                                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5).eval(),
                                nn.Linear(6, 3)), (5, 64)),
        "groups+stride": (nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, dilation=1, bias=False),
                                        nn.ELU(), nn.Conv2d(4, 6, 3, groups=2, padding="same"),
                                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(24, 2)),
                          (3, 2, 9, 9)),
        "grouped first": (nn.Sequential(nn.Conv2d(4, 4, 3, groups=2, dilation=2), nn.ReLU(),
                                        nn.Flatten(1), nn.Linear(4 * 4 * 4, 2)), (2, 4, 8, 8)),
        "conv1d": (nn.Sequential(nn.Conv1d(3, 5, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.MaxPool1d(2), nn.Conv1d(5, 2, 2), nn.Flatten(),
                                 nn.Linear(6, 2)), (4, 3, 8)),
    }


@pytest.mark.parametrize("name", ["lenet", "groups+stride", "grouped first", "conv1d"])
@pytest.mark.parametrize("owned", ["all", "conv weights", "last layer", "second conv bias"])
@pytest.mark.parametrize("per_member", [False, True])
def test_conv_sequential_path_equals_generic_vmap(name, owned, per_member, monkeypatch):
    model, shape = _convnets()[name]
    convs = [m for m in model if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    params = {"all": list(model.parameters()), "conv weights": [c.weight for c in convs],
              "last layer": list(model[-1].parameters()),
              "second conv bias": [p for p in [convs[-1].bias, convs[0].bias]
                                   if p is not None][:1]}[owned]
    pop = _population(model, params=params)
    x = torch.randn(P, *shape) if per_member else torch.randn(*shape)
    x_before = x.clone()
    assert _fastpath.fast_forward(model, dict(zip(map(id, params), pop.tensors())), (x,), P,
                                  per_member, None) is not None  # the fast path is taken
    ref = _generic_vmap(model, pop, x, per_member)
    out = batched_forward(model, pop, x, per_member_inputs=per_member)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    for chunk_size in (1, 3):
        torch.testing.assert_close(batched_forward(model, pop, x, per_member_inputs=per_member,
                                                   chunk_size=chunk_size), ref, atol=1e-5, rtol=0)
    monkeypatch.setattr(_fastpath, "_CONV_CACHE_BYTES", 2000)  # cache-sized chunks of a few members
    torch.testing.assert_close(batched_forward(model, pop, x, per_member_inputs=per_member), ref,
                               atol=1e-5, rtol=0)
    assert torch.equal(x, x_before)  # in-place activations never touch the caller's input


def _random_sequential(g: torch.Generator):
    """A random Sequential of the layers the fast path takes, for an image input."""
    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    C, H = pick([1, 3]), pick([6, 7, 8])
    layers, c, h = [], C, H
    for _ in range(pick([1, 2, 3])):
        out, k = pick([2, 4]), min(pick([1, 2, 3]), h)  # the map never shrinks below 1x1
        groups = pick([1, 2]) if c % 2 == 0 and out % 2 == 0 else 1
        layers.append(nn.Conv2d(c, out, k, stride=pick([1, 2]) if h > 4 else 1,
                                padding=pick([0, 1]), groups=groups, bias=pick([True, False])))
        h = (h + 2 * layers[-1].padding[0] - k) // layers[-1].stride[0] + 1
        c = out
        layers.append(pick([nn.ReLU(), nn.Tanh(), nn.ELU(), nn.Identity(), nn.ReLU(inplace=True)]))
        if h >= 4 and pick([True, False]):
            layers.append(pick([nn.MaxPool2d(2), nn.AvgPool2d(2)]))
            h //= 2
    if pick([True, False]):  # a Linear over the last spatial dim, before flattening
        layers += [nn.Linear(h, 3), nn.Sigmoid()]
        h_last = 3
    else:
        h_last = h
    layers += [nn.Flatten(), nn.Linear(c * h * h_last, pick([1, 4])),
               pick([nn.Tanh(), nn.Identity()])]
    return nn.Sequential(*layers), (C, H, H)


@pytest.mark.parametrize("seed", range(12))
def test_random_sequential_conv_nets_equal_generic_vmap(seed):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model, shape = _random_sequential(g)
    params = ([p for p in model.parameters() if torch.rand(1, generator=g) < 0.7]
              or [next(model.parameters())])
    pop = _population(model, params=params)
    per_member = bool(seed % 2)
    x = torch.randn(P, 2, *shape) if per_member else torch.randn(2, *shape)
    assert _fastpath.fast_forward(model, dict(zip(map(id, params), pop.tensors())), (x,), P,
                                  per_member, 3) is not None, model
    torch.testing.assert_close(
        batched_forward(model, pop, x, per_member_inputs=per_member, chunk_size=3),
        _generic_vmap(model, pop, x, per_member), atol=1e-5, rtol=0)


def test_conv_fast_path_leaves_unsupported_inputs_and_layers_to_vmap():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(0), nn.Linear(2 * 6 * 6, 2))
    pop = _population(model)
    by_id = dict(zip(map(id, model.parameters()), pop.tensors()))
    x = torch.randn(1, 8, 8)  # an unbatched [C, H, W] image: vmap's business
    assert _fastpath.fast_forward(model, by_id, (x,), P, False, None) is None
    torch.testing.assert_close(batched_forward(model, pop, x), _generic_vmap(model, pop, x, False),
                               atol=1e-5, rtol=0)
    # train mode: randomness, not identity
    dropout = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5))
    assert _fastpath.sequential_layers(dropout) is None
    assert _fastpath.sequential_layers(
        nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"))) is None
    assert _fastpath.sequential_layers(nn.Sequential(nn.MaxPool2d(2, return_indices=True))) is None


@pytest.mark.parametrize("loss_fn", [F.cross_entropy, nn.CrossEntropyLoss(),
                                     nn.CrossEntropyLoss(label_smoothing=0.1),
                                     nn.CrossEntropyLoss(reduction="sum"),
                                     lambda o, y: F.cross_entropy(o, y)])
@pytest.mark.parametrize("classes", [3, 20])
def test_cross_entropy_of_few_classes_equals_the_loop(loss_fn, classes):
    """Few classes take a transposed cross-entropy (a faster log_softmax); other losses and
    many classes the vmapped loss_fn: all equal the per-member loop, ignored targets included."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, classes))
    x, y = _cls_data((6,), classes, n=24)
    y[:5] = -100  # ignore_index: left out of the mean
    pop = _population(model)
    ref = loop_objective(model, loss_fn, x, y)(pop)
    torch.testing.assert_close(vmap_objective(model, loss_fn, x, y)(pop), ref, atol=1e-5, rtol=1e-6)


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(6, 3))
        self.gate = Gate()

    def forward(self, x):
        return self.gate(self.inner(x))


class Gate(nn.Module):
    def forward(self, h):
        return h if h.sum() > 0 else -h  # Python branch on a tensor value


def test_non_vmappable_model_names_the_module_and_loop_objective_works():
    torch.manual_seed(0)
    model = DataDependent()
    x, y = _cls_data((6,), 3)
    pop = _population(model)
    with pytest.raises(RuntimeError, match=r"DataDependent\.gate \(Gate\).*loop_objective"):
        vmap_objective(model, F.cross_entropy, x, y)(pop)
    losses = loop_objective(model, F.cross_entropy, x, y)(pop)
    torch.testing.assert_close(losses, _reference_losses(model, pop, F.cross_entropy, x, y),
                               atol=1e-6, rtol=0)


def test_train_mode_batchnorm_is_refused_with_a_remedy():
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).train()
    x, y = _cls_data((6,), 3)
    pop = _population(model)
    with pytest.raises(ValueError, match=r"Sequential\.1 \(BatchNorm1d\) is in training mode"
                                         r".*model\.eval\(\)"):
        vmap_objective(model, F.cross_entropy, x, y)(pop)
    with pytest.raises(ValueError, match="training mode"):
        batched_forward(model, pop, x)
    # the documented remedy for batch statistics: stop tracking running stats
    torch.func.replace_all_batch_norm_modules_(model)
    losses = vmap_objective(model, F.cross_entropy, x, y)(pop)
    torch.testing.assert_close(losses, _reference_losses(model, pop, F.cross_entropy, x, y),
                               atol=1e-5, rtol=0)


def test_non_scalar_loss_is_refused():
    model = _mlp()
    x, y = _cls_data((6,), 3)
    pop = _population(model)

    def per_sample(out, target):
        return F.cross_entropy(out, target, reduction="none")

    for make in (vmap_objective, loop_objective):
        with pytest.raises(ValueError, match=r"shape \(20,\) per member \(expected a scalar"):
            make(model, per_sample, x, y)(pop)


def _err_cases():
    model = _mlp()
    x, y = _cls_data((6,), 3)
    ce = F.cross_entropy
    return model, [
        (lambda: vmap_objective(model, ce, x, y, chunk_size=0),
         r"Invalid chunk_size: 0 \(expected an integer >= 1\)"),
        (lambda: vmap_objective(model, ce, x, y, chunk_size=2.5), "Invalid chunk_size: 2.5"),
        (lambda: vmap_objective(model, ce, x, y, randomness="sometimes"),
         "Invalid randomness: 'sometimes'"),
        (lambda: vmap_objective(model, ce, x, y, num_model_inputs=3),
         r"Invalid num_model_inputs: 3 \(expected <= "),
        (lambda: vmap_objective(model, ce, x, y, reduce="max"), "Invalid reduce: 'max'"),
        (lambda: vmap_objective(model, "ce", x, y), "Invalid loss_fn"),
        (lambda: vmap_objective(lambda z: z, ce, x, y),
         r"Invalid model: function \(expected a torch.nn.Module\)"),
        (lambda: vmap_objective(model, ce, x, y)(_population(_mlp(1))),
         "is not a parameter of the model"),
        (lambda: vmap_objective(model, ce, x, y)(torch.zeros(3, 5)), "Invalid population: Tensor"),
        (lambda: batched_forward(model, _population(model), x, per_member_inputs=True),
         (r"Invalid inputs\[0\]: shape \(20, 6\) with per_member_inputs=True "
          r"\(expected a tensor with leading size P=12\)")),
        (lambda: batched_forward(model, {"0.weight": torch.zeros(3, 2, 2)}, x),
         r"'0.weight' has shape \(3, 2, 2\)"),
    ]


@pytest.mark.parametrize("i", range(len(_err_cases()[1])))
def test_bad_input_raises_value_error(i):
    fn, match = _err_cases()[1][i]
    with pytest.raises(ValueError, match=match):
        fn()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_with_cpu_data():
    model = _cnn().cuda()
    x, y = _cls_data((1, 8, 8), 5)  # CPU data: moved to the parameters' device once
    pop = _population(model)
    objective = vmap_objective(model, F.cross_entropy, x, y, chunk_size=5)
    losses = objective(pop)
    assert losses.device.type == "cuda"
    ref = _reference_losses(model.cpu(),
                            Population(pop.flat.cpu(), ParamLayout(list(model.parameters()))),
                            F.cross_entropy, x, y)
    torch.testing.assert_close(losses.cpu(), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["vmap", "loop"])
def test_model_optimizer_and_objective_pickle_together_and_go_on_alike(kind):
    """Issue 12, item 3: a checkpoint by pickle (or multiprocessing) of the whole run."""
    import pickle

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    make = evoopt.vmap_objective if kind == "vmap" else evoopt.loop_objective
    objective = make(model, torch.nn.functional.mse_loss, x, y)
    opt = evoopt.PGPE(model.parameters(), popsize=8, sigma=0.1, seed=0)
    opt.step(objective)
    model2, opt2, objective2 = pickle.loads(pickle.dumps((model, opt, objective)))
    assert objective2.model is model2
    assert all(p is q for p, q in zip(opt2.layout.params, model2.parameters()))
    for _ in range(3):
        assert float(opt2.step(objective2)) == float(opt.step(objective))
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p.detach(), q.detach())
