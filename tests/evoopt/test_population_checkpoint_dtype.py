"""A checkpoint saved from parameters of another dtype (issue 12, item 14): the state that
has the parameters' dtype is cast to it on load, as torch's optimizers cast theirs, and the
state that is float64 by design stays float64; the run goes on in the model's dtype.

CMA-ES is left out: its state is cmaes.py's (see test_cmaes.py)."""

import pytest
import torch

from evoopt import population_optimizers

from ._helpers import roundtrip, sphere
from .test_registry import D, make

NAMES = sorted(n for n in population_optimizers() if n != "cmaes")
F32, F64 = torch.float32, torch.float64


def _run(name, dtype, generations):
    x = torch.nn.Parameter(torch.linspace(-1.0, 2.0, D, dtype=dtype))
    opt = make(name, [x], seed=6)
    for _ in range(generations):
        opt.step(lambda pop: sphere(pop.flat))
    return x, opt


def _float_dtypes(tree, prefix=""):
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_float_dtypes(v, f"{prefix}{k}."))
    elif isinstance(tree, torch.Tensor) and tree.is_floating_point():
        out[prefix[:-1]] = tree.dtype
    return out


@pytest.mark.parametrize("saved,model", [(F32, F64), (F64, F32)], ids=["32_into_64", "64_into_32"])
@pytest.mark.parametrize("name", NAMES)
def test_a_checkpoint_of_another_dtype_is_cast_and_the_run_goes_on(name, saved, model):
    _, source = _run(name, saved, 3)
    ckpt = roundtrip(source.state_dict())
    _, native = _run(name, model, 3)  # what the state's dtypes are in a run of this dtype
    x, opt = _run(name, model, 0)
    opt.load_state_dict(ckpt)
    assert x.dtype == model
    st = opt.state["population"]
    assert _float_dtypes(st) == _float_dtypes(native.state["population"])
    assert st["mean"].dtype == model
    inner = getattr(opt, "inner_optimizer", None)
    if inner is not None:  # torch's own load casts the inner state to the parameters' dtype
        for entry in inner.state.values():
            assert all(v.dtype == model for k, v in entry.items() if k != "step")
    assert torch.equal(st["mean"], ckpt["state"]["population"]["mean"].to(model))
    assert torch.equal(x.detach(), st["mean"])
    start = float(sphere(x.detach()))
    for _ in range(5):  # (the noise differs: randn draws other numbers in another dtype)
        assert torch.isfinite(opt.step(lambda pop: sphere(pop.flat)))
        assert opt.mean.dtype == model and x.dtype == model
    assert torch.isfinite(opt.mean).all()
    assert float(sphere(x.detach())) < 1.5 * start
