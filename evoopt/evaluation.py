r"""Batched population evaluation: all ``P`` members of a generation in one call.

A *population objective* takes a :class:`~evoopt.Population` and returns ``P`` losses;
:meth:`PopulationOptimizer.step` calls it once per generation instead of calling a
torch closure ``P`` times::

    objective = evoopt.vmap_objective(model, F.cross_entropy, x, y)
    loss = opt.step(objective)          # opt built from model.parameters()

For member ``i`` with parameters ``theta_i`` (row ``i`` of ``pop.flat``, split per
parameter), the objective computes::

    loss_i = loss_fn(functional_call(model, theta_i, inputs[:k]), *inputs[k:])

with ``k = num_model_inputs``, for all members at once with :func:`torch.func.vmap`
over the stacked parameters (``in_dims=0``); the data, the buffers and the
parameters the optimizer does not own are shared by every member (unbatched).

The population's tensors are matched to the model's parameters by *identity*
(``pop.layout.params`` are the model's ``Parameter`` objects), so parameter groups,
frozen layers and tied weights need no naming convention.

A plain ``nn.Sequential`` of ``Linear``/``Conv`` layers, elementwise activations,
pooling and ``Flatten`` (the usual ES policy, a small conv net) takes a faster route with
the same result (``evoopt/_fastpath.py``): a linear layer is one ``bmm`` with the
stacked weights (a shared input broadcast), a convolution of a shared input one im2col
GEMM with ``P*out`` output channels, later ones grouped convolutions in ``channels_last``,
members are processed in chunks whose activations fit in the CPU's L2 cache, and only
``loss_fn`` runs under vmap. On a 2-core CPU this measured 1.4x (one observation per
member) and 2.8x (a shared batch of 256 rows) faster than vmap over ``functional_call``
for an MLP, and about 11x for a small conv net on 256 rows
(``bench/bench_population_forward.py``, ``bench/bench_vs_evotorch.py``).

Chunking (``chunk_size``) uses vmap's own chunking (measured no slower than a loop
over slices, and it keeps ``randomness="same"`` identical across chunks). It bounds
memory, and on CPU it can also be faster for convolutional models, whose [N, P*C, H, W]
intermediates otherwise overflow the caches.

Where vmap cannot go -- data-dependent Python control flow, ``.item()``, a module
that writes its buffers during ``forward`` -- :func:`loop_objective` evaluates the
members one after another with the same interface (and is the reference the tests
compare :func:`vmap_objective` with). :func:`batched_forward` returns the model's
outputs for every member, with shared or per-member inputs (one observation per
member per time step in RL).

A factored (low-rank) population (:class:`evoopt.lowrank.FactoredPopulation`, from
``OpenAIES(..., rank=r)``) is never materialised here: the model runs once over all
members' rows with the center's parameters -- each ``nn.Linear`` one shared GEMM -- and
forward hooks add member ``i``'s low-rank correction ``(x_i B_i) A_i^T sigma / sqrt(r)``
(and its bias noise) to its rows; ``nn.Embedding``, ``nn.Conv1d/2d/3d`` (``groups=1``) and
``nn.LayerNorm`` are handled too (``evoopt/_fastpath.py``, :func:`factored_forward`). Every
other module must act on each row alone (MLPs, attention within a sample); train-mode
BatchNorm is refused. A model with another module owning searched parameters is evaluated
on dense chunks of ``MATERIALISE_CHUNK`` members (or ``chunk_size``), with a warning.

Train-mode ``BatchNorm`` with ``track_running_stats`` would update its running
statistics in place from ``P`` different members at once, which vmap refuses; call
``model.eval()`` (running statistics, the usual choice for evaluation) or
``torch.func.replace_all_batch_norm_modules_(model)`` (batch statistics, no tracking).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ._fastpath import factored_forward as _factored_forward
from ._fastpath import fast_forward as _fast_forward
from .checks import check_choice, check_int
from .lowrank import FactoredPopulation
from .population import Population

__all__ = ["PopulationObjective", "batched_forward", "loop_objective", "vmap_objective"]

RANDOMNESS = ("error", "different", "same")
REDUCTIONS = {"mean": torch.mean, "sum": torch.sum}
#: members per dense chunk when a factored population must be materialised
MATERIALISE_CHUNK = 16


def _warn_materialising(model: nn.Module) -> None:
    """Once per model class (Python's warning registry dedups the same text)."""
    warnings.warn(
        f"{type(model).__name__}: a module owning searched parameters is not one the factored "
        "forward handles (nn.Linear, nn.Embedding, nn.LayerNorm, nn.Conv1d/2d/3d with "
        f"groups=1), or the model takes no batched tensor input; the factored population is "
        f"materialised {MATERIALISE_CHUNK} members at a time (P x D numbers of work)",
        RuntimeWarning, stacklevel=4)


# ---------------------------------------------------------------------------- helpers
def _check_module(name: str, model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ValueError(f"Invalid {name}: {type(model).__name__} (expected a torch.nn.Module)")
    return model


def _check_chunk_size(chunk_size) -> int | None:
    return None if chunk_size is None else check_int("chunk_size", chunk_size, minimum=1)


def _check_reduce(reduce) -> Callable | None:
    if reduce is None or callable(reduce):
        return reduce
    return REDUCTIONS[check_choice("reduce", reduce, REDUCTIONS)]


def _check_no_running_stats_update(model: nn.Module) -> None:
    """Refuse train-mode BatchNorm that tracks running statistics: under vmap its
    in-place update of the shared running_mean/var from P members cannot work."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.training and m.track_running_stats:
            where = f"{type(model).__name__}.{name}" if name else type(model).__name__
            raise ValueError(
                f"Invalid model: {where} ({type(m).__name__}) is in training mode and tracks "
                "running statistics, which it would update in place from all members at once; "
                "call model.eval() to evaluate with the running statistics, or "
                "torch.func.replace_all_batch_norm_modules_(model) to use batch statistics "
                "without tracking them"
            )


def _population_tensors(model: nn.Module, pop) -> tuple[dict[int, Tensor], int]:
    """``({id(parameter): [P, *shape]}, P)`` for a Population (its ``layout.params`` are
    the parameters) or for a mapping ``{name in model: [P, *shape]}``."""
    if isinstance(pop, Population):
        return {id(p): t for p, t in zip(pop.layout.params, pop.tensors())}, pop.popsize
    if isinstance(pop, Mapping) and pop:
        own = dict(model.named_parameters(remove_duplicate=False))
        sizes = set()
        for n, t in pop.items():
            if n not in own:
                raise ValueError(
                    f"Invalid population: {n!r} is not a parameter name of {type(model).__name__}"
                )
            if (not isinstance(t, Tensor) or t.dim() == 0
                    or tuple(t.shape[1:]) != tuple(own[n].shape)):
                raise ValueError(
                    f"Invalid population: {n!r} has shape {tuple(getattr(t, 'shape', ()))} "
                    f"(expected (P, {', '.join(map(str, own[n].shape))}))"
                )
            sizes.add(t.shape[0])
        if len(sizes) != 1:
            raise ValueError(
                f"Invalid population: tensors have different leading sizes {sorted(sizes)}"
            )
        return {id(own[n]): t for n, t in pop.items()}, sizes.pop()
    raise ValueError(
        f"Invalid population: {type(pop).__name__} (expected an evoopt.Population or a non-empty "
        "dict {name: tensor of shape [P, *param_shape]})"
    )


def _by_name(model: nn.Module, by_id: dict[int, Tensor]) -> dict[str, Tensor]:
    """The population's tensors keyed by the model's parameter names (matched by identity;
    for tied weights one name suffices: functional_call ties the others)."""
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    out = {}
    for i, (pid, t) in enumerate(by_id.items()):
        if pid not in names:
            raise ValueError(
                f"Invalid population: its parameter {i} (shape {tuple(t.shape[1:])}) is not a "
                f"parameter of the model {type(model).__name__} (build the optimizer from this "
                "model's parameters, e.g. evoopt.PGPE(model.parameters(), ...))"
            )
        out[names[pid]] = t
    return out


def _to_like(x, ref: Tensor):
    """Move a tensor input to ``ref``'s device; floating inputs also take its dtype."""
    if not isinstance(x, Tensor):
        return x
    if x.is_floating_point() and x.dtype != ref.dtype:
        return x.to(device=ref.device, dtype=ref.dtype)
    return x.to(device=ref.device) if x.device != ref.device else x


def _culprit(model: nn.Module, exc: BaseException) -> str:
    """The qualified name of the innermost submodule of ``model`` in ``exc``'s traceback."""
    names = {id(m): n for n, m in model.named_modules()}
    found = None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_argcount:
            obj = tb.tb_frame.f_locals.get(code.co_varnames[0])
            if id(obj) in names and isinstance(obj, nn.Module):
                found = obj
        tb = tb.tb_next
    if found is None:
        return type(model).__name__
    sub = names[id(found)]
    return f"{type(model).__name__}.{sub} ({type(found).__name__})" if sub else type(model).__name__


def _in_loss_fn(exc: BaseException) -> bool:
    """True when ``exc`` was raised inside the loss function (under ``_reduced_loss``)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is PopulationObjective._reduced_loss.__code__:
            return True
        tb = tb.tb_next
    return False


def _vmap_failure(model: nn.Module, exc: RuntimeError, what: str, loss_fn=None) -> Exception:
    if "randomness error mode" not in str(exc) and _in_loss_fn(exc):
        name = getattr(loss_fn, "__qualname__", None) or type(loss_fn).__name__
        return RuntimeError(
            f"{what}: torch.func.vmap cannot evaluate the loss function {name} for all members "
            f"at once ({str(exc).splitlines()[0]}). The loss function must compute the loss "
            "with tensor operations and return the tensor: float(x), x.item(), x.tolist() or "
            "Python branches on tensor values leave vmap (use torch.where, torch.clamp, ... and "
            "return the 0-dim tensor). Or evaluate the members one at a time: "
            "evoopt.loop_objective(model, loss_fn, *inputs) with the same arguments."
        )
    if "randomness error mode" in str(exc):
        return ValueError(
            f"Invalid randomness: 'error', but the module {_culprit(model, exc)} draws random "
            "numbers (dropout in training mode?); pass randomness='different' (independent "
            "draws per member) or randomness='same' (one draw shared by all members), or call "
            "model.eval()"
        )
    return RuntimeError(
        f"{what}: torch.func.vmap cannot evaluate the module {_culprit(model, exc)} for all "
        f"members at once ({str(exc).splitlines()[0]}). Typical causes are Python control flow "
        "that depends on tensor values, .item()/.tolist() calls, or in-place writes to "
        "buffers in forward. Evaluate the members one at a time instead: "
        "evoopt.loop_objective(model, loss_fn, *inputs) with the same arguments, or pass a "
        "zero-argument closure to opt.step()."
    )


def _is_vmap_error(exc: RuntimeError) -> bool:
    msg = str(exc)
    return any(k in msg for k in ("vmap", "Batching rule", "BatchedTensor", "batched tensor"))


# ------------------------------------------------------------------------- objective
class PopulationObjective:
    """``objective(pop) -> Tensor[P]``: the loss of every member of a population.

    Built by :func:`vmap_objective` (one vmapped call, ``vectorized=True``) or
    :func:`loop_objective` (one ``functional_call`` per member). Runs under
    ``torch.no_grad()``; returns a detached [P] tensor on the parameters' device.
    """

    is_population_objective = True

    def __init__(self, model, loss_fn, inputs, *, num_model_inputs=1, chunk_size=None,
                 randomness="error", reduce=None, vectorized=True):
        self.model = _check_module("model", model)
        if not callable(loss_fn):
            raise ValueError(f"Invalid loss_fn: {loss_fn!r} (expected a callable)")
        self.loss_fn = loss_fn
        self.inputs = tuple(inputs)
        self.num_model_inputs = check_int("num_model_inputs", num_model_inputs, minimum=0)
        if self.num_model_inputs > len(self.inputs):
            raise ValueError(
                f"Invalid num_model_inputs: {num_model_inputs} (expected <= the number of "
                f"inputs, {len(self.inputs)})"
            )
        self.chunk_size = _check_chunk_size(chunk_size)
        self.randomness = check_choice("randomness", randomness, RANDOMNESS)
        self.reduce = _check_reduce(reduce)
        self.vectorized = bool(vectorized)
        self._moved: dict[tuple, tuple] = {}

    def __repr__(self) -> str:
        kind = "vmap_objective" if self.vectorized else "loop_objective"
        loss_name = getattr(self.loss_fn, '__name__', self.loss_fn)
        return (f"{kind}({type(self.model).__name__}, {loss_name}, "
                f"{len(self.inputs)} inputs, num_model_inputs={self.num_model_inputs}, "
                f"chunk_size={self.chunk_size}, randomness={self.randomness!r})")

    def _inputs_like(self, ref: Tensor) -> tuple:
        key = (ref.device, ref.dtype)
        if key not in self._moved:
            self._moved = {key: tuple(_to_like(x, ref) for x in self.inputs)}
        return self._moved[key]

    def _member_loss(self, params: dict[str, Tensor], inputs: tuple) -> Tensor:
        k = self.num_model_inputs
        return self._reduced_loss(functional_call(self.model, params, inputs[:k]), inputs[k:])

    def _reduced_loss(self, out, loss_inputs: tuple) -> Tensor:
        loss = self.loss_fn(out, *loss_inputs)
        if self.reduce is not None:
            loss = self.reduce(loss)
        if not isinstance(loss, Tensor):
            loss = torch.as_tensor(loss)
        return loss

    def _check_output(self, loss: Tensor, P: int) -> Tensor:
        if loss.shape != (P,):
            per_member = (tuple(loss.shape[1:]) if loss.dim() >= 1 and loss.shape[0] == P
                          else tuple(loss.shape))
            raise ValueError(
                f"Invalid loss_fn: it returned a tensor of shape {per_member} per member "
                "(expected a scalar, shape ()); use a reducing loss such as F.cross_entropy with "
                "reduction='mean', or pass reduce='mean' or reduce='sum'"
            )
        return loss

    def _loss_of_outputs(self, out: Tensor, loss_inputs: tuple, P: int) -> Tensor:
        """The members' losses from their outputs ``[P, ...]``: vmap over the loss alone."""
        loss = _few_class_cross_entropy(self.loss_fn, self.reduce, out, loss_inputs)
        if loss is not None:
            return loss
        loss = self._vmap(lambda o: self._reduced_loss(o, loss_inputs), out)
        return self._check_output(loss, P)

    def _vmap(self, fn: Callable, arg) -> Tensor:
        """``fn`` over the leading dim of ``arg`` with torch.func.vmap (this objective's
        randomness and chunk size); vmap's own failures become a message naming the culprit."""
        f = vmap(fn, in_dims=(0,), randomness=self.randomness, chunk_size=self.chunk_size)
        try:
            return f(arg)
        except RuntimeError as e:
            if _is_vmap_error(e):
                raise _vmap_failure(self.model, e, "vmap_objective", self.loss_fn) from e
            raise

    def _factored(self, pop: FactoredPopulation) -> Tensor:
        """A factored population: one shared forward with the low-rank corrections
        (``vmap_objective``), one member at a time (``loop_objective``), or -- for a model
        with a module the factored forward does not handle -- dense chunks of members."""
        P, k = pop.popsize, self.num_model_inputs
        if not self.vectorized:
            return torch.cat([self(Population(pop.row(i)[None], pop.layout)) for i in range(P)])
        inputs = self._inputs_like(pop.center)
        out = _factored_forward(self.model, pop, inputs[:k], False, self.chunk_size)
        if out is not None:
            return self._loss_of_outputs(out, inputs[k:], P)
        _warn_materialising(self.model)
        size = self.chunk_size or MATERIALISE_CHUNK
        return torch.cat([self(Population(rows, pop.layout)) for _, rows in pop.chunks(size)])

    @torch.no_grad()
    def __call__(self, pop) -> Tensor:
        if isinstance(pop, FactoredPopulation):
            return self._factored(pop)
        by_id, P = _population_tensors(self.model, pop)
        ref = next(iter(by_id.values()))
        inputs = self._inputs_like(ref)
        k = self.num_model_inputs
        if not self.vectorized:
            params = _by_name(self.model, by_id)
            losses = []
            for i in range(P):
                loss = self._member_loss({n: t[i] for n, t in params.items()}, inputs)
                losses.append(self._check_output(loss.unsqueeze(0), 1)[0])
            return torch.stack(losses).to(ref.device)
        out = _fast_forward(self.model, by_id, inputs[:k], P, False, self.chunk_size)
        if out is not None:  # plain Sequential: batched matmuls, then vmap over the loss alone
            return self._loss_of_outputs(out, inputs[k:], P)
        arg = _by_name(self.model, by_id)
        _check_no_running_stats_update(self.model)
        loss = self._vmap(lambda p: self._member_loss(p, inputs), arg)
        return self._check_output(loss, P)


def _few_class_cross_entropy(loss_fn, reduce, out: Tensor, loss_inputs: tuple) -> Tensor | None:
    """``F.cross_entropy`` (default arguments) of ``[P, N, C]`` logits against ``[N]``
    class indices for every member, for ``C < 16``, with the classes in the middle
    (``[P, C, N]``): torch's CPU log_softmax over a short innermost dim measured 8x slower
    (C = 10, 256 x 256 rows). ``None`` where this does not apply."""
    default = loss_fn is F.cross_entropy or (
        type(loss_fn) is nn.CrossEntropyLoss and loss_fn.weight is None
        and loss_fn.ignore_index == -100
        and loss_fn.reduction == "mean" and loss_fn.label_smoothing == 0.0)
    if (not default or reduce is not None or len(loss_inputs) != 1 or out.dim() != 3
            or out.shape[-1] >= 16):
        return None
    y = loss_inputs[0]
    if not isinstance(y, Tensor) or y.dtype != torch.long or y.shape != out.shape[1:2]:
        return None
    losses = F.cross_entropy(out.transpose(1, 2), y.expand(out.shape[0], -1), reduction="none")
    return losses.sum(1) / (y != -100).sum()  # the mean over the targets not ignored, as torch


def vmap_objective(model: nn.Module, loss_fn: Callable, *inputs, num_model_inputs: int = 1,
                   chunk_size: int | None = None, randomness: str = "error",
                   reduce: str | Callable | None = None) -> PopulationObjective:
    """A population objective evaluating all members in one :func:`torch.func.vmap` call.

    Member ``i`` gets ``loss_fn(functional_call(model, theta_i, inputs[:k]), *inputs[k:])``
    with ``k = num_model_inputs``; the inputs, buffers and parameters not in the
    population are shared (unbatched). Pass the result to ``opt.step``.

    Args:
        model: the module whose parameters the optimizer was built from.
        loss_fn: ``loss_fn(output, *inputs[k:])`` returning a scalar per member (e.g.
            ``F.cross_entropy`` with its default mean reduction).
        *inputs: data; floating-point tensors follow the parameters' dtype, all tensors
            their device (a converted copy is made once and cached: for a new minibatch,
            build a new objective -- it is cheap).
        num_model_inputs: how many of ``inputs`` go to the model (0 for a module whose
            ``forward`` takes no input); the rest go to ``loss_fn``.
        chunk_size: evaluate this many members per vectorized call (vmap's own
            chunking) to bound peak memory; ``None`` evaluates all at once (a plain
            Sequential of Linear/Conv layers is chunked for the CPU caches regardless). On
            CPU, 16-32 also made other conv nets on 256 rows 1.8x faster than ``None``
            (smaller intermediates).
        randomness: vmap's treatment of random ops (dropout in train mode, noise in the
            model): ``"error"`` refuses them, ``"different"`` draws independently for each
            member, ``"same"`` draws once and shares it across members (also across chunks).
        reduce: ``None`` (loss_fn must return a scalar), ``"mean"``, ``"sum"`` or a
            callable applied to each member's loss to make it a scalar.

    Raises ``ValueError`` for bad arguments, a non-scalar loss, or train-mode BatchNorm
    tracking running statistics; ``RuntimeError`` naming the module when vmap cannot
    trace the model (use :func:`loop_objective` then).
    """
    return PopulationObjective(model, loss_fn, inputs, num_model_inputs=num_model_inputs,
                               chunk_size=chunk_size, randomness=randomness, reduce=reduce,
                               vectorized=True)


def loop_objective(model: nn.Module, loss_fn: Callable, *inputs, num_model_inputs: int = 1,
                   reduce: str | Callable | None = None) -> PopulationObjective:
    """The reference population objective: one ``functional_call`` per member, in order.

    Same interface and result as :func:`vmap_objective`, for models vmap cannot trace
    (data-dependent control flow, ``.item()``) and as the reference in tests. Modules
    run as they are (a train-mode BatchNorm updates its running statistics once per
    member, as with a zero-argument closure).
    """
    return PopulationObjective(model, loss_fn, inputs, num_model_inputs=num_model_inputs,
                               reduce=reduce, vectorized=False)


# --------------------------------------------------------------------- batched forward
def _check_per_member(inputs: tuple, P: int) -> None:
    for j, x in enumerate(inputs):
        if not isinstance(x, Tensor) or x.dim() == 0 or x.shape[0] != P:
            raise ValueError(
                f"Invalid inputs[{j}]: shape {tuple(getattr(x, 'shape', ()))} with "
                f"per_member_inputs=True (expected a tensor with leading size P={P})"
            )


@torch.no_grad()
def batched_forward(model: nn.Module, pop, *inputs, per_member_inputs: bool = False,
                    chunk_size: int | None = None, randomness: str = "error"):
    """The model's output for every member: ``[P, ...]`` (a pytree of such for tuples).

    Args:
        model: the module whose parameters the population holds.
        pop: a :class:`~evoopt.Population`, or a dict ``{name: [P, *param_shape]}`` of
            (some of) the model's parameters; the others are shared.
        *inputs: the model's inputs: shared by all members (``per_member_inputs=False``),
            or one slice per member along dim 0 (``per_member_inputs=True``: each tensor
            is ``[P, ...]``, member ``i`` sees ``x[i]``; e.g. one observation per member
            per time step).
        chunk_size, randomness: as in :func:`vmap_objective`.
    """
    _check_module("model", model)
    chunk_size = _check_chunk_size(chunk_size)
    randomness = check_choice("randomness", randomness, RANDOMNESS)
    if isinstance(pop, FactoredPopulation):
        return _factored_batched_forward(model, pop, inputs, per_member_inputs, chunk_size,
                                         randomness)
    by_id, P = _population_tensors(model, pop)
    ref = next(iter(by_id.values()))
    inputs = tuple(_to_like(x, ref) for x in inputs)
    if per_member_inputs:
        _check_per_member(inputs, P)
    out = _fast_forward(model, by_id, inputs, P, per_member_inputs, chunk_size)
    if out is not None:
        return out
    params = _by_name(model, by_id)
    _check_no_running_stats_update(model)
    in_dims = (0, tuple(0 if per_member_inputs else None for _ in inputs))
    f = vmap(lambda p, xs: functional_call(model, p, xs), in_dims=in_dims,
             randomness=randomness, chunk_size=chunk_size)
    try:
        return f(params, inputs)
    except RuntimeError as e:
        if _is_vmap_error(e):
            raise _vmap_failure(model, e, "batched_forward") from e
        raise


def _factored_batched_forward(model, pop: FactoredPopulation, inputs, per_member_inputs,
                              chunk_size, randomness):
    """:func:`batched_forward` of a factored population: the shared forward with the
    low-rank corrections, or dense chunks of members (with a warning) where a module is
    not handled."""
    inputs = tuple(_to_like(x, pop.center) for x in inputs)
    if per_member_inputs:
        _check_per_member(inputs, pop.popsize)
    out = _factored_forward(model, pop, inputs, per_member_inputs, chunk_size)
    if out is not None:
        return out
    _warn_materialising(model)
    size = chunk_size or MATERIALISE_CHUNK
    outs = []
    for a, rows in pop.chunks(size):
        xs = tuple(x[a:a + len(rows)] for x in inputs) if per_member_inputs else inputs
        outs.append(batched_forward(model, Population(rows, pop.layout), *xs,
                                    per_member_inputs=per_member_inputs, randomness=randomness))
    return torch.cat(outs)
