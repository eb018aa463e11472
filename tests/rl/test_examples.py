"""The examples run with their --tiny budgets (CI smoke runs), and report the budgets they
were given and finite returns."""

import importlib.util
import math
import os

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ppo_adam_vs_kl_tiny():
    results = _load("ppo_adam_vs_kl").main(["--tiny"])
    assert [r["optimizer"] for r in results] == ["adam", "kl_adaptive"]
    for r in results:
        assert r["env_steps"] == 512 and 8 <= r["eval_return"] <= 500
    assert results[0]["final_lr"] == pytest.approx(5e-4)  # linear schedule, half the budget left


def test_pgpe_cartpole_tiny():
    out = _load("pgpe_cartpole").main(["--tiny"])
    h = out["history"]
    assert [r["generation"] for r in h] == [1, 2]
    assert h[1]["env_steps"] > h[0]["env_steps"] >= 10 * 8  # 10 episodes of >= 8 steps each
    assert all(8 <= r["center_return"] <= 500 for r in h)


def test_ars_mujoco_tiny():
    pytest.importorskip("mujoco")
    h = _load("ars_mujoco").main(["--tiny"])["history"]
    assert [r["env_steps"] for r in h] == [8 * 50, 16 * 50]  # 8 members x 50-step episodes
    assert all(math.isfinite(r["center_return"]) for r in h)


def test_es_vs_ppo_tiny(tmp_path):
    res = _load("es_vs_ppo").main(["--tiny", "--out", str(tmp_path)])
    assert set(res) == {"pgpe (linear)", "openai_es (linear)", "ppo (mlp 64-64)"}
    assert res["ppo (mlp 64-64)"]["env_steps"] == 2 * 8 * 16
    assert all(8 <= r["final_eval"] <= 500 for r in res.values())
