"""RayEvaluator: Ray-evaluated generations equal in-process ones, and faults (an actor
killed, raising, hanging) do not change a generation's numbers."""

import logging
import math
import os
import threading
import time

import pytest
import torch

import evoopt

ray = pytest.importorskip("ray")
from evoopt.distributed import RayEvaluator

pytestmark = pytest.mark.ray

P, D = 8, 5


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def noisy_sphere(rows, members, generation):
    """sum(x^2) plus noise seeded by (generation, member): independent of who evaluates."""
    noise = torch.stack(
        [
            torch.randn(
                (),
                generator=torch.Generator().manual_seed(1000 * generation + int(i)),
                dtype=torch.float64,
            )
            for i in members
        ]
    )
    return (rows.double() ** 2).sum(1) + 0.1 * noise


class Noisy:
    """A row objective with injected faults: ``faults[g]`` is what the first chunk of
    generation g to claim its marker file does once ("raise", "hang", "exit"), or "slow"
    (every chunk of g sleeps 1 s); ``bad`` members always raise."""

    def __init__(self, marker_dir=None, faults=None, bad=()):
        self.marker_dir, self.faults, self.bad = marker_dir, dict(faults or {}), set(bad)

    def evaluate_rows(self, rows, members, generation):
        if self.bad & {int(i) for i in members}:
            raise RuntimeError(f"bad member among {members.tolist()}")
        fault = self.faults.get(generation)
        if fault == "slow":
            time.sleep(1.0)
        elif fault is not None and _claim(os.path.join(self.marker_dir, str(generation))):
            if fault == "raise":
                raise RuntimeError("injected fault")
            if fault == "hang":
                time.sleep(3600)
            os._exit(1)
        return noisy_sphere(rows, members, generation)


def _claim(path) -> bool:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def sphere_objective(pop):
    return (pop.flat.double() ** 2).sum(1)


def reference(pop_flat, generation):
    return noisy_sphere(pop_flat, torch.arange(pop_flat.shape[0]), generation)


def run_generations(objective, n=3, seed=3):
    x = torch.nn.Parameter(torch.linspace(-1, 1, D))
    opt = evoopt.SNES([x], popsize=P, seed=seed)
    out = []
    for _ in range(n):
        loss = opt.step(objective)
        out.append((opt.last.losses.clone(), opt.mean.clone(), float(loss)))
    return out


class InProcess:
    is_population_objective = True

    def __init__(self):
        self.generation = 0

    def __call__(self, pop):
        out = reference(pop.flat, self.generation)
        self.generation += 1
        return out


def assert_same_run(a, b):
    for (la, ma, fa), (lb, mb, fb) in zip(a, b):
        assert torch.equal(la, lb)
        assert torch.equal(ma, mb)
        assert fa == fb


def test_population_objective_equals_in_process():
    ref = run_generations(sphere_objective)
    with RayEvaluator(lambda: sphere_objective, num_actors=2, num_cpus_per_actor=0.5) as ev:
        got = run_generations(ev)
        assert ev.events == [] and ev.generation == 3
    assert_same_run(ref, got)


def test_row_objective_one_actor_three_chunks_equals_in_process():
    ref = run_generations(InProcess())
    with RayEvaluator(Noisy, num_actors=1, chunk_size=3, num_cpus_per_actor=0.5) as ev:
        assert_same_run(ref, run_generations(ev))


def test_faults_are_replaced_and_generations_unchanged(tmp_path, caplog):
    """Generation 0: a chunk raises; 1: an actor process exits; 2: the driver ray.kills an
    actor between submit and get; 3: a chunk hangs past the timeout. Every generation
    equals the in-process one; each fault is one event, logged."""
    faults = {0: "raise", 1: "exit", 2: "slow", 3: "hang"}
    factory = lambda: Noisy(str(tmp_path), faults)
    ref = run_generations(InProcess(), n=4)
    x = torch.nn.Parameter(torch.linspace(-1, 1, D))
    opt = evoopt.SNES([x], popsize=P, seed=3)
    got = []
    with (
        caplog.at_level(logging.WARNING, logger="evoopt.distributed"),
        RayEvaluator(
            factory, num_actors=2, chunk_size=2, timeout=4.0, num_cpus_per_actor=0.5
        ) as ev,
    ):
        for g in range(4):
            if g == 2:
                victim = ev.actors[0]
                ray.get([a.ready.remote() for a in ev.actors])
                threading.Timer(0.3, ray.kill, args=(victim,)).start()
            loss = opt.step(ev)
            got.append((opt.last.losses.clone(), opt.mean.clone(), float(loss)))
        assert victim not in ev.actors
    assert_same_run(ref, got)
    assert [(e["generation"], e["kind"]) for e in ev.events] == [
        (0, "raised"),
        (1, "died"),
        (2, "died"),
        (3, "timeout"),
    ]
    assert all(len(e["members"]) == 2 and e["attempt"] == 1 for e in ev.events)
    assert len({e["actor"] for e in ev.events}) == 4  # each failed actor was replaced
    assert "injected fault" in ev.events[0]["error"]
    assert "timeout=4.0" in ev.events[3]["error"]
    logged = [r.getMessage() for r in caplog.records if r.name == "evoopt.distributed"]
    assert len(logged) == 4 and all("re-sent" in m for m in logged)
    assert "actor" in logged[0] and "injected fault" in logged[0]


def test_member_that_always_fails_gets_worst_loss():
    x = torch.nn.Parameter(torch.linspace(-1, 1, D))
    opt = evoopt.SNES([x], popsize=6, seed=0)
    with RayEvaluator(
        lambda: Noisy(bad={1}), num_actors=1, chunk_size=3, max_retries=0, num_cpus_per_actor=0.5
    ) as ev:
        pop = opt.ask()
        losses = ev(pop)
        kinds = [e["kind"] for e in ev.events]
    expected = reference(pop.flat, 0)
    expected[1] = math.inf
    assert torch.equal(losses, expected)
    # chunk [0, 1, 2] failed once, was split, member 1 failed alone and was given up
    assert kinds == ["raised", "raised", "gave_up"]
    assert ev.events[-1]["members"] == [1]
    with pytest.warns(RuntimeWarning, match="rank worst"):
        opt.tell(losses)
    assert torch.isfinite(opt.mean).all() and opt.generation == 1


def test_broken_objective_raises_instead_of_retrying_forever():
    with (
        RayEvaluator(
            lambda: Noisy(bad=set(range(4))), num_actors=1, max_retries=0, num_cpus_per_actor=0.5
        ) as ev,
        pytest.raises(RuntimeError, match="failed in a row without one success"),
    ):
        ev(torch.zeros(4, 3))


def broken_factory():
    raise OSError("no such dataset")


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"objective_factory": broken_factory}, "OSError: no such dataset"),
        (
            {
                "objective_factory": Noisy,
                "num_cpus_per_actor": 3,
                "startup_timeout": 1.0,
            },  # 2 CPUs here
            "not started after",
        ),
    ],
)
def test_actors_that_cannot_start_raise_a_clear_error(kwargs, error):
    with RayEvaluator(num_actors=1, max_retries=0, **kwargs) as ev:
        with pytest.raises(RuntimeError, match="without one success") as info:
            ev(torch.zeros(2, 3))
        assert error in str(info.value)
        assert [e["kind"] for e in ev.events] == ["start_failed"] * 3


def test_shared_stats_protocol():
    """get_stats deltas come back in member order; merge_stats' state reaches set_stats."""

    merged = []

    def merge(deltas):
        merged.append(deltas)
        return sum(deltas)

    with RayEvaluator(
        Counter, num_actors=1, chunk_size=2, merge_stats=merge, num_cpus_per_actor=0.5
    ) as ev:
        first = ev(torch.arange(12.0).reshape(6, 2))
        second = ev(torch.zeros(6, 2))
    assert merged[0] == [1.0, 5.0, 9.0]  # sum of the first column of each chunk
    assert torch.equal(first, torch.zeros(6, dtype=torch.float64))
    assert torch.equal(second, torch.full((6,), 15.0, dtype=torch.float64))  # state broadcast


class Counter:
    def __init__(self):
        self.state, self.delta = 0.0, None

    def set_stats(self, state):
        self.state = state

    def get_stats(self):
        return self.delta

    def evaluate_rows(self, rows, members, generation):
        self.delta = float(rows[:, 0].sum()) / 2
        return torch.full((rows.shape[0],), self.state, dtype=torch.float64)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_actors": 0}, "Invalid num_actors: 0"),
        ({"chunk_size": 0}, "Invalid chunk_size: 0"),
        ({"timeout": -1.0}, "Invalid timeout: -1.0"),
        ({"startup_timeout": 0}, "Invalid startup_timeout: 0"),
        ({"max_retries": -1}, "Invalid max_retries: -1"),
        ({"worst": float("nan")}, "Invalid worst: nan"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RayEvaluator(lambda: sphere_objective, **kwargs)
    with pytest.raises(ValueError, match="Invalid objective_factory"):
        RayEvaluator(42)
