"""The evoopt command: list, compare (files, table, exit codes), usage errors."""

import json

import pytest

import evoopt.compare
from evoopt import OPTIMIZERS
from evoopt.cli import DEFAULT_OPTIMIZERS, _split_list, main
from evoopt.tasks import TASKS


def test_list_prints_every_optimizer_and_task(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in list(OPTIMIZERS) + list(TASKS) + ["sgd-momentum"]:
        assert f"  {name} " in out, name
    assert (out.index("population optimizers:") < out.index("gradient optimizers:")
            < out.index("tasks:"))


def test_compare_writes_files_prints_the_table_and_exits_0(tmp_path, capsys):
    rc = main(["compare", "--task", "line", "--optimizers", "adam:lr=0.05,sgd-momentum",
               "--seeds", "0,1", "--budget-evals", "40", "--out", str(tmp_path), "--no-plot",
               "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "task line: 2 seed(s) [0, 1], budget per run: 40 evaluations" in out
    assert "adam:lr=0.05" in out and "sgd-momentum" in out and "* best:" in out
    data = json.loads((tmp_path / "results.json").read_text())
    assert [r["num_evals"] for r in data["runs"]] == [40, 40, 40, 40]
    assert data["runs"][0]["hyperparameters"] == {"lr": 0.05}
    assert not (tmp_path / "loss_vs_evals.png").exists()
    assert (tmp_path / "table.txt").read_text().startswith("task line")


def test_compare_without_arguments_is_the_quick_digits_comparison(monkeypatch, tmp_path):
    seen = {}

    def fake(task, specs, seeds, **kw):
        seen.update(task=task.name, labels=[s.label for s in specs], seeds=seeds, **kw)
        raise RuntimeError("stop here")

    monkeypatch.setattr(evoopt.compare, "compare", fake)
    monkeypatch.chdir(tmp_path)
    assert main(["compare"]) == 1  # the fake raised: a runtime failure
    assert seen["task"] == "digits" and seen["seeds"] == [0, 1]
    assert seen["budget_evals"] == 3000 and seen["budget_seconds"] is None
    assert seen["labels"] == [n for n in DEFAULT_OPTIMIZERS
                              if n in OPTIMIZERS or n == "sgd-momentum"]
    assert {"adam", "sgd-momentum", "pgpe", "cmaes", "snes"} <= set(seen["labels"])
    main(["compare", "--quick"])
    assert seen["budget_evals"] == 600 and seen["seeds"] == [0]


@pytest.mark.parametrize("argv, match", [
    (["compare", "--optimizers", "adam,nope"], "Unknown optimizer 'nope' (expected one of: "),
    (["compare", "--task", "nope"], "Unknown task 'nope' (expected one of: line, digits, digits01"),
    (["compare", "--budget-evals", "0"],
     "argument --budget-evals: invalid value '0' (expected an integer >= 1)"),
    (["compare", "--budget-evals", "ten"], "argument --budget-evals: invalid value 'ten'"),
    (["compare", "--budget-seconds", "-2"],
     "argument --budget-seconds: invalid value '-2' (expected a finite number > 0)"),
    (["compare", "--seeds", "a,b"], "argument --seeds: invalid value 'a,b'"),
    (["compare", "--task", "line", "--optimizers", "adam:foo=1"],
     "Invalid hyperparameters for 'adam:foo=1': ['foo']"),
    (["compare", "--task", "rastrigin:dim"], "is not key=value"),
    (["compare", "--task", "line", "--optimizers", "adam:lr=-1.0"], "Invalid learning rate: -1.0"),
    (["bench", "--dir", "/nonexistent"], "no bench/*.py scripts there"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_usage_errors_exit_2_with_a_clear_message(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err
    if "Unknown optimizer" in match:
        for name in ("adam", "pgpe", "sgd-momentum"):
            assert name in err.split("expected one of:")[1]


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "compare" in capsys.readouterr().err


def test_a_failed_run_exits_1_after_printing_the_table(tmp_path, capsys, monkeypatch):
    from tests.evoopt.test_compare import _Broken

    monkeypatch.setitem(OPTIMIZERS, "_broken", _Broken)
    rc = main(["compare", "--task", "line", "--optimizers", "_broken,sgd", "--budget-evals", "30",
               "--out", str(tmp_path), "--no-plot", "--no-progress"])
    assert rc == 1
    out = capsys.readouterr().out
    assert "error: _broken seed 0: RuntimeError: broken on purpose" in out


def test_train_and_evaluate_are_registered():
    try:
        import rl.cli  # noqa: F401
    except ImportError:
        assert main(["train"]) == 1
    else:
        assert main(["train", "--help"]) == 0


def test_optimizer_list_splitting():
    assert (_split_list("adam,pgpe:lr=0.1,popsize=50, cmaes")
            == ["adam", "pgpe:lr=0.1:popsize=50", "cmaes"])
    assert _split_list("sgd-momentum,,adam") == ["sgd-momentum", "adam"]


def test_bench_runs_the_scripts_of_a_directory_and_reports_failures(tmp_path, capfd):
    (tmp_path / "bench_ok.py").write_text("print('ratio 2.0x')\n")
    (tmp_path / "bench_bad.py").write_text("raise SystemExit(3)\n")
    assert main(["bench", "--dir", str(tmp_path), "bench_ok"]) == 0
    assert "ratio 2.0x" in capfd.readouterr().out
    assert main(["bench", "--dir", str(tmp_path)]) == 1
    assert "bench_bad.py failed with exit code 3" in capfd.readouterr().out
    assert main(["bench", "--dir", str(tmp_path), "nope"]) == 2
    assert ("unknown benchmark(s) ['nope'] (expected some of: bench_bad, bench_ok)"
            in capfd.readouterr().err)


def test_compare_out_that_cannot_be_written_is_refused_before_any_run(
        tmp_path, monkeypatch, capsys):
    def never(*a, **k):
        raise AssertionError("compare ran although --out cannot be written")

    monkeypatch.setattr(evoopt.compare, "compare", never)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    rc = main(["compare", "--task", "line", "--optimizers", "adam", "--out", str(blocker / "sub")])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"evoopt compare: error: --out '{blocker / 'sub'}' cannot be written (" in err
    assert "nothing was run (expected a folder you can write into)" in err


def test_compare_prints_the_table_before_writing_and_keeps_it_when_writing_fails(
        tmp_path, monkeypatch, capsys):
    def disk_full(self, out_dir, plot=True):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evoopt.compare.Comparison, "save", disk_full)
    rc = main(["compare", "--task", "line", "--optimizers", "adam", "--budget-evals", "20",
               "--seeds", "0", "--out", str(tmp_path), "--no-progress"])
    assert rc == 1
    out, err = capsys.readouterr()
    assert "task line: 1 seed(s) [0], budget per run: 20 evaluations" in out
    assert "* best: adam" in out
    assert "failed to write the results into" in err and "No space left on device" in err
    assert "the table above is all that is left" in err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("evoopt ")
