"""The messages of `evoopt train` / `evoopt evaluate` for files and folders that cannot be used:
each says what is wrong and what to do, never a traceback, and never torch's advice to load
with weights_only=False."""

import importlib

import pytest
import torch

from evoopt.cli import main

train_mod = importlib.import_module("rl.train")  # (rl.train is also the function)
FAST = ["--optimizer", "pgpe", "--popsize", "4", "--iterations", "1", "--eval-episodes", "1",
        "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "cp"
    assert main(["train", "CartPole-v1", "--policy", "linear", "--run-dir", str(run), *FAST]) == 0
    return run


def _garbage(path):
    path.write_bytes(b"\x00garbage\x00" * 50)


def _truncated(path):
    path.write_bytes(path.read_bytes()[:200])


def _pickled_module(path):  # a whole nn.Module: torch's error advises weights_only=False
    torch.save(torch.nn.Linear(2, 2), path)


def _plain_state_dict(path):
    torch.save({"weight": torch.zeros(2, 2)}, path)


@pytest.mark.parametrize("spoil, match", [
    (_garbage, "cannot be read as plain tensors (UnpicklingError; expected a policy.pt written by "
               "`evoopt train`"),
    (_truncated, "cannot be read as plain tensors"),
    (_pickled_module, "cannot be read as plain tensors (UnpicklingError"),
    (_plain_state_dict, "is not an evoopt policy (expected a policy.pt written by `evoopt train`"),
])
def test_a_policy_file_that_is_not_an_evoopt_policy(tmp_path, run_dir, spoil, match, capsys):
    bad = tmp_path / "policy.pt"
    bad.write_bytes((run_dir / "policy.pt").read_bytes())
    spoil(bad)
    assert main(["evaluate", str(bad), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "evoopt evaluate: error: Invalid policy file: " in err and match in err, err
    assert "weights_only" not in err and "Traceback" not in err


def test_evaluate_accepts_a_run_folder(run_dir, tmp_path, capsys):
    assert main(["evaluate", str(run_dir), "--episodes", "2"]) == 0
    assert "return over 2 episodes" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path), "--episodes", "1"]) == 2
    assert "is a folder without a policy.pt (expected a run folder" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt' does not exist" in capsys.readouterr().err


def test_both_checkpoints_unreadable(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "CartPole-v1", "--run-dir", str(run), "--checkpoint-every", "1", *FAST]
    assert main([*args, "--iterations", "2"]) == 0  # checkpoints after iterations 1 and 2
    _garbage(run / "checkpoint.pt")
    _truncated(run / "checkpoint.pt.prev")
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt' cannot be read: it is truncated, overwritten or not a file written by " \
           "torch.save" in err
    assert "and the previous one:" in err and "Neither can be resumed: move both away" in err


def test_a_gif_of_a_mujoco_env_without_display_prints_the_returns_then_the_hint(
        tmp_path, monkeypatch, capsys):
    run = tmp_path / "swim"
    assert main(["train", "Swimmer-v5", "--optimizer", "ars", "--policy", "linear", "--popsize",
                 "2", "--iterations", "1", "--eval-episodes", "1", "--run-dir", str(run),
                 "--no-progress"]) == 0

    def no_display(*args, **kwargs):  # what MuJoCo raises on a machine without a display
        import mujoco

        raise mujoco.FatalError("an OpenGL platform library has not been loaded into this process")

    monkeypatch.setattr(train_mod, "render_gif", no_display)
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--episodes", "1", "--gif", str(tmp_path / "s.gif")]) == 1
    out, err = capsys.readouterr()
    assert "return over 1 episodes: mean" in out
    assert "no GIF written: FatalError: an OpenGL platform library" in err
    assert "run with MUJOCO_GL=egl (GPU) or MUJOCO_GL=osmesa (CPU)" in err

