"""The population forward of a plain ``nn.Sequential`` without vmap (MLPs and conv nets).

:func:`fast_forward` computes what ``vmap(functional_call(model, ...))`` computes, with
batched matrix products and grouped convolutions written out, for a Sequential of
``Linear``, ``Conv1d/2d/3d``, elementwise activations, pooling, ``Flatten``/``Unflatten``
and eval-mode dropout (exact module types, no hooks); anything else returns ``None`` and
takes the generic vmap path. While walking the layers, the activation ``h`` is in one of
three forms:

- *shared*: the per-member tensor ``S``, the same for every member (no member-specific
  parameter applied yet);
- *flat*: ``[P, *S]``, member ``i`` at ``h[i]``;
- *grouped*: ``[N, P*C, *spatial]`` for a per-member ``[N, C, *spatial]``: member ``i``'s
  channels are ``i*C .. (i+1)*C - 1`` (vmap's own batching rule for convolutions).

A linear layer is one ``bmm`` with the stacked weights (a shared ``h`` broadcast, not
copied: measured as fast as one dense GEMM ``h @ W.reshape(P*out, in).T`` on 256 rows
and up to 2.5x faster on few rows, where copying the weights dominated). A convolution
turns a shared input into the grouped form with ``P*out`` output channels (for 2-d,
one im2col GEMM whose result is that form in channels_last), and a grouped input stays
grouped (``groups = P * conv.groups``). Pooling and activations are per channel, so they
apply to the grouped form as it is; on CPU it is kept in ``channels_last``, where
max-pooling measured 19x faster than in NCHW (the layout vmap produces).

On CPU the members are processed in chunks whose largest activation fits in the L2
cache (``_CACHE_BYTES``, ``_CONV_CACHE_BYTES``): measured 2.4x faster than one chunk for
an MLP and 3.3x for a small conv net, both on a shared batch of 256 rows
(``bench/bench_population_forward.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _module

# Elementwise, parameter-free modules: exact on any form of h.
ELEMENTWISE = (nn.Identity, nn.Tanh, nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.LeakyReLU, nn.ELU,
               nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Softplus, nn.Softsign,
               nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Tanhshrink)
# In-place twins, used once h is an intermediate this module allocated.
INPLACE = {
    nn.Tanh: torch.tanh_, nn.ReLU: torch.relu_, nn.Sigmoid: torch.sigmoid_,
    nn.Identity: lambda h: h,
}
CONV = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}
# Per-channel, parameter-free modules over the last 1/2/3 dims of [N, C, *spatial].
POOL = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3, nn.AvgPool1d: 1, nn.AvgPool2d: 2,
        nn.AvgPool3d: 3, nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3,
        nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3}
DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)

#: Bytes of the largest activation per chunk of members on CPU: [chunk, N, width]
#: tensors of about this size stay in L2, which made the shared-batch forward 2.4x faster
#: (measured, bench/bench_population_forward.py (b)); one row per member is not chunked.
_CACHE_BYTES = 1 << 20
#: The same for nets with convolutions (largest per-member activation times the chunk):
#: 4 MiB measured fastest for a conv-pool-linear net on 256 rows (59 ms vs 74 ms at 1 MiB).
_CONV_CACHE_BYTES = 4 << 20


def _channels_last(h: Tensor) -> Tensor:
    """``h`` in channels_last if it is a 4-d CPU tensor (mkldnn may return NCHW, e.g. for
    one input channel, and NCHW max-pooling is the slow kernel)."""
    if h.dim() == 4 and h.device.type == "cpu":
        return h.contiguous(memory_format=torch.channels_last)
    return h


class Unsupported(Exception):
    """This model or input takes the generic vmap path."""


def sequential_layers(model: nn.Module) -> list[nn.Module] | None:
    """The layers of ``model`` if it is a plain ``nn.Sequential`` of supported modules
    (exact types, no hooks, eval-mode dropout, zero-padded convolutions), else ``None``."""
    if type(model) is not nn.Sequential or not len(model):
        return None
    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return None
    layers = list(model)
    for m in [model, *layers]:
        if m._forward_hooks or m._forward_pre_hooks:
            return None
    for m in layers:
        t = type(m)
        if t is nn.Linear or t in ELEMENTWISE or t in (nn.Flatten, nn.Unflatten):
            continue
        if t in CONV and m.padding_mode == "zeros":
            continue
        if t in POOL and not getattr(m, "return_indices", False):
            continue
        if t in DROPOUT and not m.training:
            continue
        return None
    return layers


class _Walk:
    """One chunk of ``P`` members through the layers; see the module docstring for the
    three forms of ``h`` (``form`` is "shared", "flat" or "grouped")."""

    def __init__(self, by_id: dict[int, Tensor], P: int, cols: dict):
        self.by_id, self.P, self.cols = by_id, P, cols
        self.form, self.own, self.channels = "shared", False, 0

    def param(self, m: nn.Module, name: str) -> tuple[Tensor | None, bool]:
        """The layer's tensor ``name`` and whether it is per member ([P, *shape])."""
        t = getattr(m, name)
        if t is None:
            return None, False
        p = self.by_id.get(id(t))
        return (t, False) if p is None else (p, True)

    # ------------------------------------------------------------------ form changes
    def to_flat(self, h: Tensor) -> Tensor:
        if self.form == "grouped":  # [N, P*C, *sp] -> [P, N, C, *sp] (a view)
            h = h.view(h.shape[0], self.P, self.channels, *h.shape[2:]).transpose(0, 1)
        elif self.form == "shared":
            h = h.expand(self.P, *h.shape)
        self.form = "flat"
        return h

    def to_grouped(self, h: Tensor, spatial: int) -> Tensor:
        if self.form == "grouped":
            return h
        if self.form == "shared":
            h = h.unsqueeze(0).expand(self.P, *h.shape)
        if h.dim() != spatial + 3:  # [P, N, C, *sp]; an unbatched [C, *sp] input is not handled
            raise Unsupported
        self.channels = h.shape[2]
        self.form = "grouped"  # (possibly a view of the input: not marked as own)
        return _channels_last(h.transpose(0, 1).reshape(h.shape[1], -1, *h.shape[3:]))

    # ------------------------------------------------------------------------ layers
    def layer(self, m: nn.Module, h: Tensor) -> Tensor:
        t = type(m)
        if t is nn.Linear:
            h = self.linear(m, h)
        elif t in CONV:
            h = self.conv(m, h)
        elif t in POOL:
            if self.form == "flat":
                h = self.to_grouped(h, POOL[t])
            elif self.form == "grouped" and h.dim() != POOL[t] + 2:
                raise Unsupported
            h = m(h)
            self.own = True
        elif t in (nn.Flatten, nn.Unflatten):
            if self.form == "grouped":
                h = self.to_flat(h)
            if self.form == "flat":  # per-member dims shift by one
                if t is nn.Flatten:
                    h = h.flatten(*(d + 1 if d >= 0 else d for d in (m.start_dim, m.end_dim)))
                else:
                    h = h.unflatten(m.dim + 1 if m.dim >= 0 else m.dim, m.unflattened_size)
            else:
                h = m(h)
        elif t in DROPOUT:
            pass  # eval mode: the identity
        elif self.own and t in INPLACE:
            INPLACE[t](h)
        else:
            h = m(h.clone() if getattr(m, "inplace", False) and not self.own else h)
        return h

    def linear(self, m: nn.Linear, h: Tensor) -> Tensor:
        W, w_member = self.param(m, "weight")
        b, b_member = self.param(m, "bias")
        if self.form == "grouped":
            h = self.to_flat(h)
        self.own = True
        if not w_member:  # a layer shared by all members
            h = F.linear(h, W, None if b_member else b)
            if b_member:
                h = self.to_flat(h)
                h = h + b.view(self.P, *[1] * (h.dim() - 2), -1)
            return h
        P, out = self.P, W.shape[1]
        if self.form == "shared":  # broadcast, not copied: no [P*out, in] copy of the weights
            rows = h.reshape(-1, h.shape[-1])
            lead, h = h.shape[:-1], rows.expand(P, *rows.shape)
            self.form = "flat"
        else:
            lead, h = h.shape[1:-1], h.reshape(P, -1, h.shape[-1])
        if b is not None and h.shape[1] <= 16:  # few rows: one fused call is cheapest
            h = torch.baddbmm(b.unsqueeze(-2) if b_member else b, h, W.transpose(1, 2))
        else:  # many rows: bmm + in-place add beats baddbmm's broadcast copy
            h = torch.bmm(h, W.transpose(1, 2))
            if b is not None:
                h += b.unsqueeze(1) if b_member else b
        return h.reshape(P, *lead, out)

    def conv(self, m: nn.Module, h: Tensor) -> Tensor:
        W, w_member = self.param(m, "weight")
        b, b_member = self.param(m, "bias")
        d, P = W.dim() - 2 - w_member, self.P
        conv = CONV[type(m)]
        args = (m.stride, m.padding, m.dilation)
        if not (w_member or b_member):
            if self.form == "shared":
                self.own = True
                return conv(h, W, b, *args, m.groups)
            W, b = W.expand(P, *W.shape), None if b is None else b.expand(P, *b.shape)
        elif not w_member:
            W = W.expand(P, *W.shape)
        elif b is not None and not b_member:
            b = b.expand(P, *b.shape)
        W = W.reshape(-1, *W.shape[2:])  # [P*out, C/groups, *k]
        b = None if b is None else b.reshape(-1)
        self.own = True
        if self.form == "shared" and m.groups == 1:  # one convolution, P*out channels
            if h.dim() != d + 2:
                raise Unsupported
            self.form, self.channels = "grouped", m.out_channels
            if d == 2 and not isinstance(m.padding, str):
                return self.im2col_conv(m, h, W, b)
            return _channels_last(conv(_channels_last(h), W, b, *args, 1))
        h = self.to_grouped(h, d)
        self.channels = m.out_channels
        return _channels_last(conv(h, W, b, *args, P * m.groups))

    def im2col_conv(self, m: nn.Conv2d, h: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
        """A 2-d convolution of a shared input as ONE dense GEMM ``cols @ W.T`` with the
        input's patches ``cols = [N*Ho*Wo, C*kh*kw]`` (built once, kept for every chunk):
        its ``[N*Ho*Wo, P*out]`` result is the grouped form in channels_last as it is."""
        key = id(m)
        if key not in self.cols:
            N, _, H, Wd = h.shape
            (kh, kw), (sh, sw), (ph, pw), (dh, dw) = m.kernel_size, m.stride, m.padding, m.dilation
            Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
            Wo = (Wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
            # [N, C*kh*kw, Ho*Wo]
            cols = F.unfold(h, m.kernel_size, m.dilation, m.padding, m.stride)
            cols = cols.transpose(1, 2).reshape(N * Ho * Wo, -1)
            if b is not None:  # a column of ones: the GEMM adds the bias (no broadcast copy)
                cols = torch.cat([cols, cols.new_ones(cols.shape[0], 1)], 1)
            self.cols[key] = (cols, (N, Ho, Wo))
        cols, (N, Ho, Wo) = self.cols[key]
        W = W.reshape(W.shape[0], -1)
        if b is not None:
            W = torch.cat([W, b[:, None]], 1)
        out = cols @ W.T  # [N*Ho*Wo, P*out]
        return out.view(N, Ho, Wo, -1).permute(0, 3, 1, 2)


def _shapes(layers: list[nn.Module], shape: tuple) -> list[tuple]:
    """The per-member shape after each layer (on the meta device: no arithmetic)."""
    shapes, h = [], torch.empty(shape, device="meta")
    for m in layers:
        if type(m) is nn.Linear:
            h = torch.empty((*h.shape[:-1], m.out_features), device="meta")
        elif type(m) in CONV:
            h = CONV[type(m)](h, torch.empty(m.weight.shape, device="meta"), None, m.stride,
                              m.padding, m.dilation, m.groups)
        elif type(m) not in DROPOUT:
            h = m(h)
        shapes.append(tuple(h.shape))
    return shapes


def _chunk_for_cache(layers, x: Tensor, per_member: bool) -> int:
    """Members per chunk whose largest activation is about ``_CACHE_BYTES`` (an MLP's
    widest layer) or ``_CONV_CACHE_BYTES`` (the largest tensor of a net with other layers)."""
    shape = tuple(x.shape[1:] if per_member else x.shape)
    if all(type(m) is nn.Linear or type(m) in ELEMENTWISE for m in layers):  # an MLP: no shape walk
        rows = max(1, x[0].numel() // x.shape[-1] if per_member else x.numel() // x.shape[-1])
        width = max(max(m.in_features, m.out_features) for m in layers if type(m) is nn.Linear)
        return max(1, _CACHE_BYTES // (rows * width * x.element_size()))
    try:
        biggest = max(torch.Size(s).numel() for s in [shape, *_shapes(layers, shape)])
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise Unsupported from e
    return max(1, _CONV_CACHE_BYTES // max(1, biggest * x.element_size()))


def fast_forward(model: nn.Module, by_id: dict[int, Tensor], inputs: tuple, P: int,
                 per_member: bool, chunk_size: int | None) -> Tensor | None:
    """``[P, *out]``: the model's output for every member, or ``None`` where the fast path
    does not apply (not a plain Sequential of supported layers, several or non-floating
    inputs, population tensors outside its Linear/conv layers, an unbatched conv input)."""
    layers = sequential_layers(model)
    if layers is None or len(inputs) != 1 or not isinstance(inputs[0], Tensor):
        return None
    x = inputs[0]
    if x.dim() < (2 if per_member else 1) or not x.is_floating_point():
        return None
    with_params = [m for m in layers if type(m) is nn.Linear or type(m) in CONV]
    own = {id(t) for m in with_params for t in (m.weight, m.bias) if t is not None}
    if not with_params or not own.issuperset(by_id):
        return None  # the generic path names the stranger
    try:
        if x.device.type == "cpu":
            fit = _chunk_for_cache(layers, x, per_member)
            chunk_size = fit if chunk_size is None else min(chunk_size, fit)
        chunk_size = P if chunk_size is None else chunk_size
        outs, cols = [], {}  # cols: a shared input's conv patches, built once for all chunks
        for a in range(0, P, chunk_size):
            n = min(chunk_size, P - a)
            sub = by_id if n == P else {k: v[a:a + n] for k, v in by_id.items()}
            walk = _Walk(sub, n, cols)
            h = x[a:a + n] if per_member and n < P else x
            if per_member:
                walk.form = "flat"
            for m in layers:
                h = walk.layer(m, h)
            outs.append(walk.to_flat(h))
    except Unsupported:
        return None
    return outs[0] if len(outs) == 1 else torch.cat(outs)


# ------------------------------------------------------------------- factored forward
# A factored (low-rank) population (evoopt/lowrank.py) runs the model ONCE over every
# member's rows stacked member-major ([c * B, ...] for c members of B rows each), with the
# center's parameters: each nn.Linear is one shared GEMM over all rows. A forward hook on
# every module that owns searched parameters then adds member i's part to its rows:
#   Linear     y_i += (x_i B_i) A_i^T * (+-sigma / sqrt r)  + db_i
#   Embedding  y_i += A_i[idx_i] B_i^T * (+-sigma / sqrt r)
#   Conv       y_i += A_i-mix of conv(x_i, B_i as r kernels) (groups = 1)
#   LayerNorm  y_i  = layer_norm(x_i) * (w + dw_i) + (b + db_i)
# Every other module must act on each row alone (attention within a sample, activations,
# eval-mode norms); a module that owns searched parameters and is none of these makes
# factored_forward return None (the caller materialises instead). Each hook checks that
# its input still has the chunk's rows in dim 0 (a sequence-first module fails loudly;
# a parameter-free module that mixes rows and keeps the shape cannot be detected).

def _factored_module(m: nn.Module) -> bool:
    t = type(m)
    if t in CONV:
        return m.groups == 1 and m.padding_mode == "zeros"
    if t is nn.Embedding:
        return m.max_norm is None
    return t in (nn.Linear, nn.LayerNorm)


def check_no_row_mixing(model: nn.Module) -> None:
    """Refuse a train-mode BatchNorm: its batch statistics would mix the members' rows."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            raise ValueError(
                f"Invalid model: {type(model).__name__}.{name} ({type(m).__name__}) is in "
                "training mode: its batch statistics would mix the rows of all members of a "
                "factored population, which share one forward pass; call model.eval()"
            )


def factored_modules(model: nn.Module, pop) -> list[tuple[nn.Module, dict[str, int]]] | None:
    """``[(module, {parameter name: layout index})]`` for every module owning searched
    parameters, or ``None`` when one of them is not handled (or a searched parameter is
    not the model's)."""
    index = {id(p): i for i, p in enumerate(pop.layout.params)}
    found, seen = [], set()
    for m in model.modules():
        own = {n: index[id(p)] for n, p in m.named_parameters(recurse=False) if id(p) in index}
        if not own:
            continue
        if not _factored_module(m):
            return None
        found.append((m, own))
        seen.update(own.values())
    return found if len(seen) == len(index) else None


class _Chunk:
    """Members ``a .. a + c - 1`` of a factored population, ``rows`` model rows in all."""

    def __init__(self, pop, a: int, c: int, rows: int):
        self.pop, self.members, self.c, self.rows = pop, slice(a, a + c), c, rows

    def check_rows(self, m: nn.Module, x: Tensor) -> None:
        if x.dim() == 0 or x.shape[0] != self.rows:
            raise ValueError(
                f"Invalid model for a factored population: {type(m).__name__} got an input of "
                f"shape {tuple(x.shape)}, but the members' {self.rows} rows must stay in dim 0 "
                "(batch-first modules acting on each row alone)"
            )

    def delta(self, index: int) -> Tensor:
        """``[c, *shape]``: the members' dense perturbation of parameter ``index``."""
        pop, shape = self.pop, self.pop.layout.shapes[index]
        if len(shape) >= 2:
            A, B, _ = pop.factors(index, self.members)
            return torch.bmm(A, B.transpose(1, 2)).view(self.c, *shape)
        return pop.small_noise(index, self.members).view(self.c, *shape)

    def hook(self, own: dict[str, int]):
        """The forward hook of a module owning the searched parameters ``own``."""
        def run(m, inputs, out):
            x = inputs[0]
            self.check_rows(m, x)
            if type(m) is nn.LayerNorm:
                return self.layer_norm(m, own, x, out)
            conv = type(m) in CONV  # y: [c, L, features, *spatial] or [c, L, features]
            y = out.reshape(self.c, -1, *(out.shape[1:] if conv else out.shape[-1:]))
            if "weight" in own:
                A, B, _ = self.pop.factors(own["weight"], self.members)
                if type(m) is nn.Linear:
                    y.baddbmm_(torch.bmm(x.reshape(self.c, -1, x.shape[-1]), B), A.transpose(1, 2))
                elif type(m) is nn.Embedding:
                    idx = x.reshape(self.c, -1, 1).expand(-1, -1, A.shape[-1])
                    y.baddbmm_(A.gather(1, idx), B.transpose(1, 2))
                else:
                    y += self.conv_correction(m, x, A, B)
            if "bias" in own:
                b = self.pop.small_noise(own["bias"], self.members)
                y += b.view(self.c, 1, -1, *[1] * (y.dim() - 3))
            return y.reshape(out.shape)
        return run

    def conv_correction(self, m: nn.Module, x: Tensor, A: Tensor, B: Tensor) -> Tensor:
        """``[c, L, out, *spatial]``: ``conv(x_i, A_i B_i^T)`` for every member as one
        grouped convolution with ``c * r`` kernels (``B_i``'s columns) and a mix by ``A_i``."""
        c, r = self.c, A.shape[-1]
        L = x.shape[0] // c
        kernels = B.transpose(1, 2).reshape(c * r, *m.weight.shape[1:])
        xg = x.reshape(c, L, *x.shape[1:]).transpose(0, 1).reshape(L, -1, *x.shape[2:])
        z = CONV[type(m)](xg, kernels, None, m.stride, m.padding, m.dilation, c)
        spatial = z.shape[2:]
        out = torch.einsum("lcrs,cor->clos", z.reshape(L, c, r, -1), A)
        return out.reshape(c, L, A.shape[1], *spatial)

    def layer_norm(self, m: nn.LayerNorm, own: dict[str, int], x: Tensor, out: Tensor) -> Tensor:
        k = len(m.normalized_shape)
        n = F.layer_norm(x, m.normalized_shape, None, None, m.eps)
        n = n.reshape(self.c, -1, *n.shape[-k:])
        params = []
        for name in ("weight", "bias"):
            t = getattr(m, name)
            if name in own:
                t = t + self.delta(own[name])
                t = t.view(self.c, 1, *m.normalized_shape)
            params.append(t)
        w, b = params
        y = n if w is None else n * w
        y = y if b is None else y + b
        return y.reshape(out.shape)


def _member_rows(x, a: int, c: int, per_member: bool) -> tuple:
    """``(model input, rows per member, batched)`` for members ``a .. a + c - 1``: a
    member's input of two or more dims is a batch of rows (stacked member-major,
    ``[c * B, ...]``), a one-dim input is one unbatched row (``[c, ...]``)."""
    if not isinstance(x, Tensor) or x.dim() < (2 if per_member else 1):
        return x, None, False
    one = x[a:a + c] if per_member else x.expand(c, *x.shape)
    if one.dim() >= 3:
        return one.reshape(-1, *one.shape[2:]), one.shape[1], True
    return one, 1, False


def factored_forward(model: nn.Module, pop, inputs: tuple, per_member: bool,
                     chunk_size: int | None) -> Tensor | None:
    """``[P, *out]``: the model's output for every member of the factored population
    ``pop``, run as one shared forward per chunk of members with the low-rank corrections
    added by hooks (see above); ``None`` when a module owning searched parameters is not
    handled, the first input is not a tensor, or the output is not a tensor."""
    check_no_row_mixing(model)
    mods = factored_modules(model, pop)
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    if mods is None or not inputs or any(id(p) not in names for p in pop.layout.params):
        return None
    center = {names[id(p)]: t for p, t in zip(pop.layout.params, pop.layout.unflatten(pop.center))}
    P = pop.popsize
    chunk_size = chunk_size or P
    outs = []
    for a in range(0, P, chunk_size):
        c = min(chunk_size, P - a)
        xs, per, batched = zip(*(_member_rows(x, a, c, per_member) for x in inputs))
        if per[0] is None:
            return None
        ctx = _Chunk(pop, a, c, c * per[0])
        handles = [m.register_forward_hook(ctx.hook(own)) for m, own in mods]
        try:
            out = torch.func.functional_call(model, center, xs)
        finally:
            for h in handles:
                h.remove()
        if not isinstance(out, Tensor):
            return None
        outs.append(out.reshape(c, per[0], *out.shape[1:]) if batched[0] else out)
    return outs[0] if len(outs) == 1 else torch.cat(outs)
