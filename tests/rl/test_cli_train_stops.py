"""How `evoopt train` ends: Ctrl-C (exit 130, checkpoint saved, the resume command printed and
exact), an optimizer that has stopped for good (the run ends, the summary says so), and the
summary that names every file written."""

import importlib
import os
import shlex
import signal
import stat

import numpy as np
import pytest

import evoopt
from evoopt.cli import main
from rl.outputs import read_csv
from rl.train import _postfix, train

train_mod = importlib.import_module("rl.train")  # (rl.train is also the function)

ARGS = ["train", "CartPole-v1", "--optimizer", "pgpe", "--policy", "linear", "--popsize", "4",
        "--seed", "2", "--iterations", "5", "--eval-every", "1", "--eval-episodes", "2",
        "--checkpoint-every", "10", "--no-progress"]


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def test_ctrl_c_saves_exits_130_and_the_printed_command_resumes_exactly(
        tmp_path, monkeypatch, capsys):
    full = str(tmp_path / "full")
    assert main([*ARGS, "--run-dir", full]) == 0
    capsys.readouterr()

    run = str(tmp_path / "run")
    iterate = train_mod._PopulationRunner.iterate

    def interrupted_at_2(self):
        row = iterate(self)
        if self.opt.generation == 2:
            signal.raise_signal(signal.SIGINT)  # a single Ctrl-C during iteration 2
        return row

    monkeypatch.setattr(train_mod._PopulationRunner, "iterate", interrupted_at_2)
    assert main([*ARGS, "--run-dir", run]) == 130
    out, err = capsys.readouterr()
    assert "interrupted at iteration 2; the checkpoint in" in err and "holds 2 iterations" in err
    command = err.split("Resume with:")[1].strip().splitlines()[0]
    assert command.endswith("--resume") and "--run-dir " + run in command
    assert len(read_csv(os.path.join(run, "metrics.csv"))) == 2

    monkeypatch.setattr(train_mod._PopulationRunner, "iterate", iterate)
    assert main(shlex.split(command)[1:]) == 0
    assert "resumed from the checkpoint of iteration 2" in capsys.readouterr().out
    np.testing.assert_equal(_strip(read_csv(os.path.join(run, "metrics.csv"))),
                            _strip(read_csv(os.path.join(full, "metrics.csv"))))


def test_ctrl_c_without_a_run_dir_says_nothing_was_saved(monkeypatch, capsys):
    iterate = train_mod._PopulationRunner.iterate

    def interrupted(self):
        signal.raise_signal(signal.SIGINT)
        return iterate(self)

    monkeypatch.setattr(train_mod._PopulationRunner, "iterate", interrupted)
    assert main(ARGS) == 130
    out, err = capsys.readouterr()
    assert "no --run-dir: nothing will be saved" in out
    assert "interrupted at iteration 1: nothing was saved (no --run-dir)" in err


class _StopsAfter2(evoopt.PGPE):
    """PGPE that reports a pycma-like stop after two generations, and an adapted width."""

    @property
    def stopped(self):
        return {"tolfun": 1e-11} if self.generation >= 2 else {}

    @stopped.setter
    def stopped(self, value):  # a base class that assigns the attribute
        pass

    @property
    def current_sigma(self):
        return 0.123 * self.generation


def test_an_optimizer_that_stopped_for_good_ends_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(evoopt.OPTIMIZERS, "_stops", _StopsAfter2)
    run = tmp_path / "run"
    args = ["train", "CartPole-v1", "--optimizer", "_stops", "--popsize", "4", "--iterations", "6",
            "--eval-every", "5", "--eval-episodes", "1", "--run-dir", str(run), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "_stops on CartPole-v1: 2 iterations" in out
    assert "stopped early: the optimizer has stopped for good (tolfun=1e-11)" in out
    rows = read_csv(str(run / "metrics.csv"))
    assert len(rows) == 2 and not np.isnan(rows[-1]["eval_return"])  # the last one is evaluated
    assert [r["sigma"] for r in rows] == [0.123, 0.246]  # the adapted width, not the initial one
    # resuming a stopped run with a larger budget does not step it again
    res = train("CartPole-v1", optimizer="_stops", popsize=4, iterations=8, eval_every=5,
                eval_episodes=1, run_dir=str(run), resume=True, progress=False, plot=False)
    assert len(res.history) == 2 and res.stop_reason == "optimizer stopped"


def test_the_summary_lists_every_file_and_the_checkpoint_has_the_usual_mode(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--optimizer", "pgpe", "--popsize", "4", "--iterations",
                 "2", "--eval-episodes", "1", "--checkpoint-every", "1", "--run-dir", str(run),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    listed = out.split("files: ")[1].strip().split(", ")
    on_disk = sorted(str(p) for p in run.iterdir())
    assert sorted(listed) == on_disk
    assert {os.path.basename(p) for p in listed} >= {"config.json", "metrics.csv", "checkpoint.pt",
                                                      "checkpoint.pt.prev", "policy.pt",
                                                      "curve.png"}
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run.iterdir()}
    assert modes["checkpoint.pt"] == modes["checkpoint.pt.prev"] == modes["metrics.csv"]
    assert modes["policy.pt"] == modes["metrics.csv"]


def test_resume_on_an_empty_folder_says_it_starts_fresh(tmp_path, capsys):
    run = tmp_path / "new"
    assert main(["train", "CartPole-v1", "--optimizer", "pgpe", "--popsize", "4", "--iterations",
                 "1", "--eval-episodes", "1", "--run-dir", str(run), "--resume",
                 "--no-progress"]) == 0
    assert f"--resume: no checkpoint in {run}: starting a fresh run" in capsys.readouterr().out


@pytest.mark.parametrize("ret, ev, expected", [
    (12.3456789012345, float("nan"), {"ret": "12.35"}),
    (float("nan"), 500.0, {"eval": "500"}),
    (1234567.891, 0.000123456789, {"ret": "1.235e+06", "eval": "0.0001235"}),
])
def test_the_progress_bar_shows_short_numbers_and_no_nan(ret, ev, expected):
    assert _postfix(ret, ev) == expected


def test_ppo_interrupted_before_its_first_checkpoint_says_a_resume_starts_afresh(
        tmp_path, monkeypatch, capsys):
    iterate = train_mod._GradientRunner.iterate

    def interrupted(self):
        signal.raise_signal(signal.SIGINT)
        return iterate(self)

    monkeypatch.setattr(train_mod._GradientRunner, "iterate", interrupted)
    rc = main(["train", "CartPole-v1", "--optimizer", "ppo", "--hidden", "8", "--num-envs", "2",
               "--algo-kwargs", "num_steps=8,update_epochs=1", "--iterations", "3",
               "--eval-episodes", "1", "--run-dir", str(tmp_path / "ppo"), "--no-progress"])
    assert rc == 130
    err = capsys.readouterr().err
    assert "interrupted at iteration 1, before the first checkpoint (every 50 iterations): " \
           "--resume would start afresh" in err
    assert not (tmp_path / "ppo" / "checkpoint.pt").exists()
