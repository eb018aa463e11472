"""Every example runs with its tiny budget (--tiny) and returns numbers we check."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread is fastest, and the box is shared
    yield
    torch.set_num_threads(before)


def test_compare_line_regression_gives_every_optimizer_the_same_start(tmp_path, capsys):
    res = load("compare_line_regression").main(["--tiny", "--out", str(tmp_path)])
    runs = {k: v for k, v in res.items() if isinstance(v, dict) and "curve" in v}
    assert set(runs) == {"sgd", "sgd-momentum", "adam", "rmsprop", "lbfgs", "pgpe", "cmaes"}
    assert len({r["init_loss"] for r in runs.values()}) == 1  # the seed articles' bug is gone
    ls = res["least_squares"]["final_loss"]
    for name, r in runs.items():
        assert r["final_loss"] < 0.5 * r["init_loss"], name
        assert r["curve"][-1][0] <= 60, name  # the budget in loss evaluations
    for name in ("sgd", "sgd-momentum", "adam", "lbfgs"):
        assert runs[name]["final_loss"] == pytest.approx(ls, rel=0.05), name
    assert runs["cmaes"]["final_loss"] < 2 * ls
    assert Path(res["plot"]).stat().st_size > 1000
    assert "least squares" in capsys.readouterr().out


def test_cmaes_nondifferentiable_lowers_the_zero_one_error():
    res = load("cmaes_nondifferentiable").main(["--tiny"])
    assert res["initial_error"] > 0.8
    assert res["final_error"] < res["initial_error"] - 0.25
    assert res["test_accuracy"] > 0.35
    assert res["num_evals"] == 15 * 23  # popsize 4 + floor(3 ln 650) = 23


def test_custom_loop_runs_adam_and_pgpe_with_one_closure():
    res = load("custom_loop_adam_to_pgpe").main(["--tiny"])
    assert res["adam"]["num_evals"] == 8 and res["pgpe"]["num_evals"] == 8 * 50
    assert res["adam"]["test_accuracy"] > 0.6
    assert res["pgpe"]["train_loss"] < 2.2  # ln(10) = 2.30 is chance level


def test_scheduler_drives_lr_and_sigma():
    res = load("scheduler_lr_sigma").main(["--tiny"])
    assert res["lr"] == pytest.approx(0.003)
    assert res["sigma"] == pytest.approx(0.005)
    assert res["num_evals"] == 30 * 50
    assert res["final_f"] < 0.3 * res["initial_f"]


def test_es_vs_ppo_warms_every_method_up_before_timing_any(tmp_path, monkeypatch):
    """One-time costs are not charged to whichever method runs first: every method runs one
    untimed, unsaved iteration before the first timed run."""
    module = load("es_vs_ppo")
    calls = []

    def recording(env_id, **kw):
        calls.append(kw)
        return real(env_id, **kw)

    real = module.train
    monkeypatch.setattr(module, "train", recording)
    res = module.main(["--tiny", "--out", str(tmp_path)])
    n = len(module.METHODS)
    warm, timed = calls[:n], calls[n:]
    assert len(timed) == n and all(c.get("run_dir") is None and c["iterations"] == 1 for c in warm)
    assert [c["optimizer"] for c in warm] == [c["optimizer"] for c in timed]
    assert all(c["run_dir"].startswith(str(tmp_path)) for c in timed)
    assert all(8 <= r["final_eval"] <= 500 and r["env_steps"] > 0 for r in res.values())
