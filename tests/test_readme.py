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


def _command_lines() -> list[list[str]]:
    """Every ``evoopt ...`` command of the README's bash blocks, in order, without repeats
    (continuation lines joined, comments dropped, ``a && evoopt b`` split)."""
    import shlex

    out: list[list[str]] = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split(" #")[0].split("&&"):
                argv = shlex.split(part)
                if argv[:1] == ["evoopt"] and argv[1:] not in out:
                    out.append(argv[1:])
    return out


#: Small budgets appended to each command (argparse keeps the last value of an option).
OVERRIDES = {
    "train": ["--iterations", "1", "--eval-episodes", "1", "--no-progress", "--threads", "1"],
    "compare": ["--budget-evals", "60", "--seeds", "0", "--no-plot", "--no-progress"],
    "evaluate": ["--episodes", "1"],
    "list": [],
    "bbob": ["--dimensions", "2", "--functions", "1,2", "--instances", "1", "--budget", "10",
             "--no-progress"],
}


def test_every_command_line_of_the_readme_runs(tmp_path, monkeypatch, capsys):
    """The README's command lines, in order, in an empty folder, with small budgets: each exits
    0 and writes what the README says (runs/cp/policy.pt, cartpole.gif, ...)."""
    from evoopt.cli import main

    monkeypatch.chdir(tmp_path)
    commands = _command_lines()
    assert {c[0] for c in commands} == set(OVERRIDES)
    assert sum(c[0] == "train" for c in commands) >= 4
    for argv in commands:
        extra = list(OVERRIDES[argv[0]])
        if "--ray-actors" in argv:  # one actor is enough to run the command (2 CPUs here)
            extra += ["--ray-actors", "1"]
        rc = main(argv + extra)
        captured = capsys.readouterr()
        assert rc == 0, (argv, captured.err[-2000:])
        if argv[0] == "train" and "--run-dir" in argv:
            run_dir = argv[argv.index("--run-dir") + 1]
            assert (tmp_path / run_dir / "policy.pt").exists(), argv
            assert "files: " in captured.out
    assert (tmp_path / "cartpole.gif").stat().st_size > 1000
    assert (tmp_path / "runs" / "rosen" / "results.json").exists()
    for name in ("cmaes", "pycma", "snes", "de"):  # COCO's data folders, one per optimizer
        assert any((tmp_path / "runs" / "bbob" / name).rglob("*.info")), name


def test_train_help_says_what_is_required_and_the_default_budget(capsys):
    from evoopt.cli import main

    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Only ENV_ID is required" in text
    assert "the budget (the preset's, else 1,000,000 env steps" in text
    assert "(default: the env's preset optimizer, else pgpe)" in text
