"""The README's Python snippets run as written, and do what they say."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_quick_start_trains_the_digits_classifier_with_pgpe_and_the_ask_tell_snippet_runs():
    quick, ask_tell = _blocks()[0], _blocks()[1]
    ns: dict = {}
    exec(compile(quick, "README quick start", "exec"), ns)
    assert ns["opt"].generation == 100
    assert float(ns["loss"]) < 1.0  # from 2.3 (chance) at the start
    assert float(ns["accuracy"]) > 0.8

    def my_loss(flat):
        ns["opt"].layout.load_(flat)
        return torch.nn.functional.cross_entropy(ns["model"](ns["x"]), ns["y"])

    ns["my_loss"] = my_loss
    before = ns["opt"].generation
    exec(compile(ask_tell, "README ask/tell", "exec"), ns)
    assert ns["opt"].generation == before + 2
    assert ns["loss"].dim() == 0


def test_rl_snippet_solves_cartpole():
    rl_block = next(b for b in _blocks() if "make_policy(" in b)
    ns: dict = {}
    exec(compile(rl_block, "README rl", "exec"), ns)
    assert float(ns["mean_return"]) >= 475
    assert ns["generation"] < 20
