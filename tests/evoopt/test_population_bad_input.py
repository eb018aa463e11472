"""What a new user passes by mistake is refused up front with a message that names the
fix (issue 12, items 16 and the Adam closure), and what is valid is accepted alike."""

import math

import numpy as np
import pytest
import torch

import evoopt


def _opt(params=None, **kw):
    params = params if params is not None else [torch.nn.Parameter(torch.ones(3))]
    return evoopt.SNES(params, popsize=4, seed=0, **kw)


# ------------------------------------------------------------------ closures
BAD_CLOSURES = [
    ("none", lambda x: (lambda: None), ValueError, r"returned None .*`return loss`"),
    ("vector", lambda x: (lambda: x * 2), ValueError,
     r"returned a torch.float32 tensor of shape \(3,\) \(expected the loss as a scalar"),
    ("bool", lambda x: (lambda: (x > 0).all()), ValueError, r"torch.bool tensor of shape \(\)"),
    ("string", lambda x: (lambda: "1.0"), ValueError, r"returned a str \(expected the loss"),
    ("adam_style", lambda x: (lambda: (x**2).sum().backward()), RuntimeError,
     r"calls loss.backward\(\), but SNES evaluates it under torch.no_grad\(\).*"
     r"`if torch.is_grad_enabled\(\): loss.backward\(\)`"),
]


@pytest.mark.parametrize("make_closure,error,match", [c[1:] for c in BAD_CLOSURES],
                         ids=[c[0] for c in BAD_CLOSURES])
def test_bad_closure_is_refused_at_the_first_member(make_closure, error, match):
    x = torch.nn.Parameter(torch.ones(3))
    opt = _opt([x])
    calls = []
    inner = make_closure(x)

    def closure():
        calls.append(1)
        return inner()

    with pytest.raises(error, match=match):
        opt.step(closure)
    assert len(calls) == 1  # not once per member: the same mistake for all
    assert torch.equal(x.detach(), torch.ones(3)) and opt.generation == 0


def test_the_guarded_adam_closure_runs_with_adam_and_with_a_population_optimizer():
    target = torch.tensor([0.5, -1.0, 2.0])
    for cls in (torch.optim.Adam, evoopt.SNES):
        x = torch.nn.Parameter(torch.zeros(3))
        opt = cls([x], lr=0.1) if cls is torch.optim.Adam else cls([x], sigma=0.5, seed=0)

        def closure():
            opt.zero_grad()
            loss = ((x - target) ** 2).sum()
            if torch.is_grad_enabled():
                loss.backward()
            return loss

        for _ in range(300):
            opt.step(closure)
        assert float(((x.detach() - target) ** 2).sum()) < 1e-4, cls.__name__


def test_closure_returning_numbers_or_one_element_tensors_is_accepted():
    values = []
    for result in (lambda x: float((x**2).sum()), lambda x: (x**2).sum().reshape(1, 1),
                   lambda x: np.float32((x**2).sum())):
        x = torch.nn.Parameter(torch.ones(3))
        opt = _opt([x])
        values.append(float(opt.step(lambda: result(x))))
    assert values[0] == pytest.approx(values[1]) == pytest.approx(values[2], rel=1e-6)


# -------------------------------------------------------------------- losses
@pytest.mark.parametrize("make", [
    lambda v: torch.tensor(v, dtype=torch.int8), lambda v: torch.tensor(v, dtype=torch.int16),
    lambda v: torch.tensor(v, dtype=torch.uint8), lambda v: torch.tensor(v, dtype=torch.int32),
    lambda v: np.array(v, dtype=np.int16), lambda v: np.array(v, dtype=np.uint8),
    lambda v: list(v),
], ids=["int8", "int16", "uint8", "int32", "np_int16", "np_uint8", "list"])
def test_integer_losses_of_any_dtype_are_numbers(make):
    results = []
    for losses in (torch.tensor([3.0, 1.0, 2.0, 0.0]), make([3, 1, 2, 0])):
        opt = _opt()
        opt.ask()
        results.append((float(opt.tell(losses)), opt.mean.clone()))
    assert results[0][0] == results[1][0] == 1.5
    assert torch.equal(results[0][1], results[1][1])


@pytest.mark.parametrize("losses,match", [
    (torch.tensor([True, False, True, False]), r"dtype torch.bool .*mask.float\(\)"),
    (np.array([True, False, True, False]), r"booleans .*mask.float\(\)"),
    ([True, False, 1.0, 0.0], r"booleans"),
    (torch.ones(4, dtype=torch.complex64), r"dtype torch.complex64 \(expected a real dtype"),
])
def test_boolean_or_complex_losses_are_refused(losses, match):
    opt = _opt()
    opt.ask()
    with pytest.raises(ValueError, match=match):
        opt.tell(losses)
    assert opt.generation == 0


# ---------------------------------------------------------------- parameters
def test_a_parameter_listed_twice_is_refused():
    x = torch.nn.Parameter(torch.ones(3))
    with pytest.warns(UserWarning, match="duplicate parameters"):  # torch's own warning first
        with pytest.raises(ValueError, match=r"Invalid parameter '1': the same tensor as "
                                             r"parameter '0' .*appear more than once"):
            _opt([x, x])
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        _opt([{"params": [x]}, {"params": [x]}])
    opt = _opt([x])
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [x]})
    assert opt.num_params == 3


def test_a_model_on_the_meta_device_is_refused():
    model = torch.nn.Linear(3, 2, device="meta")
    with pytest.raises(ValueError, match=r"Invalid parameter 'weight': on the meta device "
                                         r".*model.to_empty"):
        _opt(list(model.named_parameters()))


@pytest.mark.parametrize("name", ["openai_es", "pgpe"])
@pytest.mark.parametrize("inner", [torch.optim.LBFGS, lambda groups: torch.optim.LBFGS(groups)],
                         ids=["class", "factory"])
def test_a_closure_only_inner_optimizer_is_refused_up_front(name, inner):
    with pytest.raises(ValueError, match=r"Invalid optimizer: LBFGS needs a closure at every "
                                         r"step .*\(Adam, SGD, evoopt.ClipUp"):
        evoopt.OPTIMIZERS[name]([torch.nn.Parameter(torch.ones(3))], optimizer=inner)


# ---------------------------------------------------------------- vmap blame
@pytest.mark.parametrize("model", [
    torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)),
    torch.nn.ModuleDict({"a": torch.nn.Linear(3, 1)}),
], ids=["sequential_fast_path", "functional_call"])
@pytest.mark.parametrize("call", ["float", "item"])
def test_vmap_objective_blames_the_loss_function_that_leaves_tensors(model, call):
    if isinstance(model, torch.nn.ModuleDict):
        class Wrap(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.a = model["a"]

            def forward(self, x):
                return self.a(x)

        model = Wrap()
    x, y = torch.randn(8, 3), torch.randn(8, 1)

    def mse_as_number(out, target):
        loss = ((out - target) ** 2).mean()
        return float(loss) if call == "float" else loss.item()

    objective = evoopt.vmap_objective(model, mse_as_number, x, y)
    opt = evoopt.SNES(model.parameters(), seed=0)
    with pytest.raises(RuntimeError, match=r"cannot evaluate the loss function .*mse_as_number"
                                           r".*float\(x\), x.item\(\).*loop_objective"):
        opt.step(objective)
    # the fix it names works: the same loss function member by member
    loss = opt.step(evoopt.loop_objective(model, mse_as_number, x, y))
    assert math.isfinite(float(loss))
