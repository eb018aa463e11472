import io

import numpy as np
import pytest
import torch

from rl.normalization import RunningNorm


def _data(seed=0, n=257, d=5):
    rng = np.random.default_rng(seed)
    return rng.normal(loc=[1.0, -2.0, 3e3, 0.0, 5.0][:d], scale=[0.1, 2.0, 50.0, 1e-3, 7.0][:d],
                      size=(n, d))


def test_chunked_updates_equal_numpy_mean_and_var():
    x = _data()
    norm = RunningNorm(5)
    for chunk in np.array_split(x, [1, 2, 50, 51, 200]):  # includes a 1-row and uneven chunks
        norm.update(torch.from_numpy(chunk))
    assert norm.count.item() == len(x)
    np.testing.assert_allclose(norm.mean.numpy(), x.mean(0), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(norm.var.numpy(), x.var(0), rtol=1e-11)
    np.testing.assert_allclose(norm.std.numpy(), np.sqrt(np.maximum(x.var(0), 1e-2)), rtol=1e-11)
    assert norm.mean.dtype == torch.float64


def test_update_accepts_float32_and_leading_dims():
    x = _data(1, n=60).astype(np.float32).reshape(3, 20, 5)
    norm = RunningNorm(5)
    norm.update(torch.from_numpy(x))
    flat = x.reshape(-1, 5).astype(np.float64)
    np.testing.assert_allclose(norm.mean.numpy(), flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(norm.var.numpy(), flat.var(0), rtol=1e-10)


def test_merge_of_workers_equals_one_pass():
    x = _data(2, n=300)
    parts = np.array_split(x, 4)
    workers = []
    for p in parts:
        w = RunningNorm(5)
        w.update(torch.from_numpy(p))
        workers.append(w)
    total = RunningNorm(5)
    total.merge(workers[0])                # a module
    for w in workers[1:]:
        total.merge(w.stats())             # plain tensors, what a remote worker sends
    one = RunningNorm(5)
    one.update(torch.from_numpy(x))
    torch.testing.assert_close(total.mean, one.mean, rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(total.m2, one.m2, rtol=1e-11, atol=0)
    assert total.count.item() == 300
    total.merge({"count": 0.0, "mean": torch.ones(5), "m2": torch.ones(5)})  # empty: no change
    torch.testing.assert_close(total.mean, one.mean, rtol=1e-13, atol=1e-12)


def test_forward_normalizes_clips_and_floors_the_variance():
    x = _data(3, n=100)
    x[:, 3] = 0.25  # a constant coordinate: var 0 -> min_var (OpenAI-ES, EvoTorch: 1e-2)
    norm = RunningNorm(5, clip=2.0)
    y0 = norm(torch.from_numpy(x[:2]))
    torch.testing.assert_close(y0, torch.from_numpy(x[:2]).clamp(-2, 2))  # identity before data
    norm.update(torch.from_numpy(x))
    q = torch.from_numpy(x[:7]).float()
    y = norm(q)
    assert y.dtype == torch.float32
    std = np.sqrt(np.maximum(x.var(0), 1e-2))
    assert std[3] == 0.1
    expected = np.clip((x[:7] - x.mean(0)) / std, -2.0, 2.0)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert (y.abs() <= 2.0).all() and (y[:, 3].abs() < 1e-6).all()


def test_state_dict_round_trips_exactly_with_weights_only_load():
    norm = RunningNorm(5, clip=3.0)
    norm.update(torch.from_numpy(_data(4)))
    buf = io.BytesIO()
    torch.save(norm.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    other = RunningNorm(5, clip=3.0)
    other.load_state_dict(sd)
    for k in ("count", "mean", "m2"):
        assert torch.equal(getattr(other, k), getattr(norm, k))
        assert getattr(other, k).dtype == torch.float64
    q = torch.randn(4, 5)
    assert torch.equal(other(q), norm(q))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RunningNorm(0), "Invalid shape"),
        (lambda: RunningNorm(3, clip=-1.0), "Invalid clip: -1.0"),
        (lambda: RunningNorm(3, clip=float("inf")), "Invalid clip: inf"),
        (lambda: RunningNorm(3, min_var=0.0), "Invalid min_var: 0.0"),
        (lambda: RunningNorm(3).update(torch.zeros(4, 2)), r"Invalid x: shape \(4, 2\)"),
        (lambda: RunningNorm(3).merge({"count": 2.0, "mean": torch.zeros(2), "m2": torch.zeros(2)}),
         r"statistics of shape \(2,\)"),
        (lambda: RunningNorm(3).merge([1, 2]), "expected a RunningNorm or a dict"),
        (lambda: RunningNorm(3).merge({"count": -1.0, "mean": torch.zeros(3),
                                       "m2": torch.zeros(3)}),
         "count -1.0"),
    ],
)
def test_bad_input_raises(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "feed, match",
    [
        (lambda n: n.update(torch.tensor([[1.0, float("nan"), 2.0]])), "Invalid x: it holds NaN"),
        (lambda n: n.update(torch.tensor([[1.0, float("inf"), 2.0]])), "Invalid x: it holds NaN"),
        (lambda n: n.merge({"count": 2.0, "mean": torch.tensor([0.0, float("nan"), 0.0]),
                            "m2": torch.zeros(3)}), "Invalid other: non-finite statistics"),
        (lambda n: n.merge({"count": float("inf"), "mean": torch.zeros(3), "m2": torch.zeros(3)}),
         "Invalid other: non-finite statistics"),
    ],
)
def test_non_finite_input_is_refused_and_leaves_the_statistics_unchanged(feed, match):
    norm = RunningNorm(3)
    norm.update(torch.from_numpy(_data(d=3)))
    before = norm.stats()
    with pytest.raises(ValueError, match=match):
        feed(norm)
    for k, v in norm.stats().items():
        assert torch.equal(v, before[k]), k


def test_statistics_stay_float64_when_the_owner_is_cast():
    owner = torch.nn.Sequential(torch.nn.Linear(5, 2))
    owner.norm = RunningNorm(5)
    owner.norm.update(torch.from_numpy(_data(5)))
    mean = owner.norm.mean.clone()
    owner.float()
    owner.half()
    assert owner.norm.mean.dtype == torch.float64 and torch.equal(owner.norm.mean, mean)
    assert owner[0].weight.dtype == torch.float16
