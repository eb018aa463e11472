"""A character-level language model on text every machine has: the Python standard
library's own source files, read at run time from the running interpreter.

Text: the ``*.py`` files directly in ``sysconfig.get_paths()["stdlib"]``, in sorted order,
as bytes, keeping the ASCII ones (vocabulary: the 128 ASCII codes), concatenated up to
``num_chars`` characters; the first ``1 - test_fraction`` of it is the training text, the
rest the held-out text. (Another Python version has other files: the numbers are fixed
per interpreter, not across versions.)

Examples: a window of ``context`` characters predicts the next one. The training set is
``num_train`` windows at evenly spaced positions of the training text (no randomness), the
held-out set ``num_test`` windows of the held-out text. Training runs on minibatches, as
language models are trained: the ``k``-th call of a closure or of the population
objective uses minibatch ``k`` (``batch_size`` windows, taken in a fixed shuffled order of
the training set, seed 0, cycling), for gradient and population optimizers alike. One
evaluation is the mean cross-entropy over one minibatch for one parameter vector;
:meth:`CharLM.loss` (what a comparison records) is the loss over the whole training set.

Model (``size``): an MLP over the window, ``Embedding(128, emb) -> Flatten ->
Linear(context * emb, hidden) -> Tanh -> Linear(hidden, 128)`` (Bengio et al. 2003's
neural probabilistic language model without the direct connections), initialised as
torch initialises ``nn.Linear`` (a private generator per seed) except the output bias,
which starts at the training text's log character frequencies: every optimizer starts
near the unigram model and must use the context to go below it. Every matrix there
is one a low-rank ES factors (``OpenAIES(..., rank=r)``), and the whole model is handled
by the factored forward (``evoopt/_fastpath.py``).

Metric: ``test_loss``, the held-out cross-entropy in nats per character (lower is better).
The baseline reported next to it, ``unigram_loss``, is the held-out cross-entropy of the
training text's character frequencies (add-one smoothing): a model below it uses the
context. The comparison's acceptance check is that the best population optimizer beats
that baseline.
"""

from __future__ import annotations

import functools
import math
import sysconfig
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_choice, check_int, check_range
from ..evaluation import vmap_objective
from .base import Task, build_uninitialized, init_uniform_

__all__ = ["SIZES", "CharLM", "load_stdlib_text"]

VOCAB = 128
#: size -> (context, emb, hidden); the number of parameters is printed by `evoopt list`
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (8, 8, 64),  # 13.5k parameters
    "small": (16, 16, 256),  # 101k
    "medium": (32, 32, 1024),  # 1.2M
    "large": (64, 64, 4096),  # 17.3M
}


_NON_ASCII = bytes(range(VOCAB, 256))


@functools.lru_cache(maxsize=4)
def load_stdlib_text(num_chars: int) -> Tensor:
    """``[num_chars]`` int64 ASCII codes: the standard library's top-level ``*.py`` files in
    sorted order, non-ASCII bytes dropped. Cached: treat it as read-only."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out, total = [], 0
    for path in sorted(root.glob("*.py")):
        data = path.read_bytes().translate(None, _NON_ASCII)
        out.append(data[:num_chars - total])
        total += len(out[-1])
        if total >= num_chars:
            break
    if total < num_chars:
        raise ValueError(
            f"Invalid num_chars: {num_chars} (the standard library at {root} has only {total} "
            "ASCII characters in its top-level .py files)"
        )
    return torch.frombuffer(bytearray(b"".join(out)), dtype=torch.uint8).long()


def windows(text: Tensor, context: int, num: int) -> tuple[Tensor, Tensor]:
    """``num`` windows ``[num, context]`` at evenly spaced positions and the characters
    that follow them ``[num]``."""
    ends = torch.linspace(context, len(text) - 1, num).long()
    return text.unfold(0, context, 1)[ends - context], text[ends]


def unigram(train: Tensor, test: Tensor) -> tuple[float, Tensor]:
    """The add-one smoothed character frequencies of ``train``: their held-out cross-entropy
    on ``test`` (nats/char) and their logarithms ``[128]`` (float32)."""
    counts = torch.bincount(train, minlength=VOCAB).double() + 1.0
    logp = (counts / counts.sum()).log()
    return float(-logp[test].mean()), logp.float()


class CharLM(Task):
    """Character-level LM on the stdlib's source (MLP over a window); metric: test_loss.

    Args:
        size: one of :data:`SIZES` (``"tiny"`` ... ``"large"``).
        num_chars: characters of text read (train + held-out).
        num_train, num_test: windows in the training and held-out sets.
        batch_size: windows per minibatch (one evaluation).
        test_fraction: the held-out share of the text (its end).
    """

    name = "charlm"
    metric = "test_loss"
    metric_higher_is_better = False
    default_budget_evals = 50000
    evaluation_unit = "the mean cross-entropy of one parameter vector on one minibatch"
    # Tuned on size=tiny, seed 0, 60 s (1 thread): see bench/bench_lowrank.py.
    hyperparameters: ClassVar[dict] = {
        "adam": {"lr": 0.01},
        "openai_es": {"popsize": 32, "lr": 0.01, "sigma": 0.05, "weight_decay": 0.0},
    }

    def __init__(self, size: str = "tiny", num_chars: int = 1_000_000, num_train: int = 65536,
                 num_test: int = 4096, batch_size: int = 256, test_fraction: float = 0.1):
        self.size = check_choice("size", size, SIZES)
        self.num_chars = check_int("num_chars", num_chars, minimum=1000)
        self.num_train = check_int("num_train", num_train, minimum=1)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.num_test = check_int("num_test", num_test, minimum=1)
        self.test_fraction = check_range("test_fraction", test_fraction, 0.0, 0.5,
                                         low_open=True)
        self.context, self.emb, self.hidden = SIZES[size]
        self._data = None

    @property
    def data(self) -> tuple[Tensor, Tensor, Tensor, Tensor, float, Tensor]:
        """``(x_train, y_train, x_test, y_test, unigram_loss, unigram_log_probs)``, built on
        first use."""
        if self._data is None:
            text = load_stdlib_text(self.num_chars)
            cut = int(len(text) * (1 - self.test_fraction))
            train, test = text[:cut], text[cut:]
            self._data = (*windows(train, self.context, self.num_train),
                          *windows(test, self.context, self.num_test),
                          *unigram(train, test[self.context:]))
        return self._data

    @property
    def acceptance(self) -> dict:
        """The best population optimizer's held-out loss is below the unigram baseline."""
        return {"population_min": round(self.data[4], 4)}

    def make_model(self, seed: int) -> nn.Module:
        c, e, h = self.context, self.emb, self.hidden

        def build():
            return nn.Sequential(nn.Embedding(VOCAB, e), nn.Flatten(), nn.Linear(c * e, h),
                                 nn.Tanh(), nn.Linear(h, VOCAB))

        model = init_uniform_(build_uninitialized(build), seed)
        with torch.no_grad():  # start at the unigram model: the output bias = log-frequencies
            model[-1].bias.copy_(self.data[5])
        return model

    def loss(self, model: nn.Module) -> Tensor:
        x, y = self.data[:2]
        return F.cross_entropy(model(x), y)

    def minibatches(self):
        """An endless iterator of ``(x, y)`` minibatches in the fixed order (see above)."""
        x, y = self.data[:2]
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        k, B = 0, min(self.batch_size, len(y))
        while True:
            idx = order[torch.arange(k * B, (k + 1) * B) % len(y)]
            k += 1
            yield x[idx], y[idx]

    def population_objective(self, model: nn.Module):
        """Every call: the next minibatch, all members at once (:func:`vmap_objective`; a
        factored population takes the factored forward)."""
        batches = self.minibatches()

        def objective(pop) -> Tensor:
            return vmap_objective(model, F.cross_entropy, *next(batches))(pop)

        objective.is_population_objective = True
        return objective

    def closure(self, model: nn.Module, opt: torch.optim.Optimizer):
        """Every call: the next minibatch's loss, back-propagated when gradients are on."""
        batches = self.minibatches()

        def closure() -> Tensor:
            opt.zero_grad()
            x, y = next(batches)
            loss = F.cross_entropy(model(x), y)
            if torch.is_grad_enabled():
                loss.backward()
            return loss

        return closure

    @torch.no_grad()
    def metrics(self, model: nn.Module) -> dict[str, float]:
        x, y, xt, yt, uni, _ = self.data
        test = float(F.cross_entropy(model(xt), yt))
        return {"test_loss": test, "train_loss": float(F.cross_entropy(model(x), y)),
                "unigram_loss": uni, "test_bits_per_char": test / math.log(2)}
