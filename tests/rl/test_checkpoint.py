"""rl.checkpoint: atomic writes, fallback to the previous good file, refusal of corrupted or
mismatched files, GracefulExit, and exact resume of a run killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch

import evoopt
from rl.checkpoint import GracefulExit, describe, load_checkpoint, read_header, save_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def state(v: float):
    return {
        "mean": torch.full((4,), v, dtype=torch.float64),
        "generation": int(v),
        "name": "snes",
        "rng": torch.arange(16, dtype=torch.uint8),
    }


def assert_state(obj, v: float):
    assert torch.equal(obj["mean"], torch.full((4,), v, dtype=torch.float64))
    assert obj["generation"] == int(v) and obj["name"] == "snes"


def test_round_trip_keeps_previous_and_loads_with_weights_only(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(state(1.0), path, header={"optimizer": "SNES"})
    save_checkpoint(state(2.0), path, header={"optimizer": "SNES"})
    assert_state(load_checkpoint(path, expected={"optimizer": "SNES"}), 2.0)
    assert_state(load_checkpoint(str(path) + ".prev"), 1.0)
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["format"] == "evoopt.checkpoint/1" and raw["header"] == {"optimizer": "SNES"}
    assert sorted(os.listdir(tmp_path)) == ["ck.pt", "ck.pt.prev"]  # no temporary files left


class Crash(Exception):
    pass


@pytest.mark.parametrize("crash_at", [1, 2])
def test_crash_during_save_leaves_a_good_checkpoint(tmp_path, monkeypatch, crash_at):
    """Crash at the first rename (temp file written and fsynced, nothing renamed) or at the
    second (old file already moved to .prev): load still returns the old good state."""
    path = tmp_path / "ck.pt"
    save_checkpoint(state(1.0), path)
    save_checkpoint(state(2.0), path)
    real, calls = os.replace, []

    def replace(a, b):
        calls.append((a, b))
        if len(calls) == crash_at:
            raise Crash("power cut")
        return real(a, b)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Crash):
        save_checkpoint(state(3.0), path)
    monkeypatch.setattr(os, "replace", real)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    if crash_at == 1:
        assert_state(load_checkpoint(path), 2.0)
    else:  # only ck.pt.prev (state 2) is there: load says so and returns it
        assert not path.exists()
        with pytest.warns(
            RuntimeWarning, match="does not exist; loading the previous good checkpoint"
        ):
            assert_state(load_checkpoint(path), 2.0)


def _flip_tensor_byte(path):
    data = bytearray(path.read_bytes())
    needle = torch.full((4,), 3.0, dtype=torch.float64).numpy().tobytes()
    i = data.index(needle)
    data[i + 5] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "corrupt, why",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "cannot be read"),
        (lambda p: p.write_bytes(b"\x00garbage" * 100), "cannot be read"),
        (lambda p: p.write_bytes(b""), "cannot be read"),
        (_flip_tensor_byte, "sha256 digest does not match"),
        (lambda p: torch.save({"mean": torch.zeros(4)}, p), "is not an evoopt checkpoint"),
    ],
)
def test_corrupted_newest_falls_back_to_previous(tmp_path, corrupt, why):
    path = tmp_path / "ck.pt"
    save_checkpoint(state(2.0), path)
    save_checkpoint(state(3.0), path)
    corrupt(path)
    with pytest.warns(RuntimeWarning, match=f"{why}.*loading the previous good checkpoint"):
        assert_state(load_checkpoint(path), 2.0)
    # with no good previous file: a clear error
    corrupt(tmp_path / "ck.pt.prev") if why != "sha256 digest does not match" else (
        tmp_path / "ck.pt.prev"
    ).write_bytes(b"junk")
    with pytest.raises(ValueError, match="Invalid checkpoint: .*; and the previous one: "
                                         ".*Neither can be resumed"):
        load_checkpoint(path)
    os.unlink(tmp_path / "ck.pt.prev")
    with pytest.raises(ValueError, match="no previous checkpoint"):
        load_checkpoint(path)


def test_missing_checkpoint_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_mismatched_checkpoint_is_refused(tmp_path):
    x = torch.nn.Parameter(torch.zeros(5))
    snes = evoopt.SNES([x], popsize=8, seed=0)
    path = tmp_path / "ck.pt"
    save_checkpoint(
        {"optimizer": snes.state_dict()},
        path,
        header=describe(optimizer=snes, env_id="CartPole-v1"),
    )
    assert read_header(path) == {
        "optimizer": "SNES",
        "param_shapes": [[5]],
        "popsize": 8,
        "maximize": False,
        "env_id": "CartPole-v1",
    }
    cases = [
        (evoopt.SNES([x], popsize=16, seed=0), "CartPole-v1", "popsize: saved 8, expected 16"),
        (
            evoopt.SNES([torch.nn.Parameter(torch.zeros(6))], popsize=8),
            "CartPole-v1",
            r"param_shapes: saved \[\[5\]\], expected \[\[6\]\]",
        ),
        (
            evoopt.PGPE([x], popsize=8, sigma=0.1),
            "CartPole-v1",
            "optimizer: saved 'SNES', expected 'PGPE'",
        ),
        (snes, "Pendulum-v1", "env_id: saved 'CartPole-v1', expected 'Pendulum-v1'"),
    ]
    for opt, env_id, match in cases:
        with pytest.raises(ValueError, match=match):
            load_checkpoint(path, expected=describe(optimizer=opt, env_id=env_id))
    policy = torch.nn.Linear(4, 2)
    with pytest.raises(ValueError, match="policy: saved '<missing>', expected 'Linear'"):
        load_checkpoint(path, expected=describe(policy=policy))
    with pytest.raises(ValueError, match="Invalid header: list"):
        save_checkpoint({}, path, header=[1])


def test_graceful_exit_turns_signals_into_a_flag():
    before = signal.getsignal(signal.SIGTERM)
    with GracefulExit() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert stop.requested and stop.signal == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # a second signal acts at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is before


SCRIPT = textwrap.dedent("""
    import os, sys, time
    import torch
    import evoopt
    from rl.checkpoint import GracefulExit, describe, load_checkpoint, save_checkpoint

    path, generations, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    torch.set_num_threads(1)
    x = torch.nn.Parameter(torch.linspace(-2.0, 2.0, 10))
    opt = evoopt.PGPE([x], popsize=12, lr=0.2, sigma=0.5, seed=7)
    header = describe(optimizer=opt, task="rastrigin")
    history = []
    if os.path.exists(path) or os.path.exists(path + ".prev"):
        ck = load_checkpoint(path, expected=header)
        opt.load_state_dict(ck["optimizer"])
        history = list(ck["history"])

    def rastrigin(pop):
        z = pop.flat.double()
        return 10 * z.shape[1] + (z ** 2 - 10 * torch.cos(2 * torch.pi * z)).sum(1)

    with GracefulExit() as stop:
        while opt.generation < generations and not stop.requested:
            opt.step(rastrigin)
            history.append(opt.last.losses.clone())
            save_checkpoint({"optimizer": opt.state_dict(), "history": history}, path,
                            header=header)
            time.sleep(delay)
""")


def _run(script, path, generations, delay=0.0, **popen):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, str(script), str(path), str(generations), str(delay)], env=env, **popen
    )


def test_sigkill_mid_run_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    generations = 40
    full, killed = tmp_path / "full.pt", tmp_path / "killed.pt"
    ref = _run(script, full, generations)
    proc = _run(script, killed, generations, delay=0.05)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:  # kill it once it has checkpointed a few generations
        try:
            with warnings.catch_warnings():  # between its two renames only .prev exists
                warnings.simplefilter("ignore")
                done = len(load_checkpoint(killed)["history"])
        except (FileNotFoundError, ValueError):
            done = 0
        if done >= 8:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    stopped_at = len(load_checkpoint(killed)["history"])
    assert 8 <= stopped_at < generations
    assert _run(script, killed, generations).wait(timeout=60) == 0  # resume
    assert ref.wait(timeout=60) == 0
    a, b = load_checkpoint(full), load_checkpoint(killed)
    assert len(a["history"]) == len(b["history"]) == generations
    for la, lb in zip(a["history"], b["history"]):
        assert torch.equal(la, lb)
    assert torch.equal(
        a["optimizer"]["state"]["population"]["mean"], b["optimizer"]["state"]["population"]["mean"]
    )


def test_sigterm_saves_and_stops_at_the_end_of_a_generation(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    path = tmp_path / "ck.pt"
    proc = _run(script, path, 10_000, delay=0.05)
    t0 = time.monotonic()
    while not path.exists() and time.monotonic() - t0 < 60:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0  # a clean exit, not a kill
    ck = load_checkpoint(path)
    assert 1 <= len(ck["history"]) < 10_000
    assert ck["optimizer"]["state"]["population"]["generation"] == len(ck["history"])
