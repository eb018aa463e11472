"""Env steps per second: MuJoCo Warp (``rl.envs.mujoco_warp``) against Gymnasium's C MuJoCo
envs (``gymnasium.make_vec(..., vectorization_mode="sync")``, the gymnasium backend's
in-process stepping) and against the ceiling, ``mujoco_warp.step`` alone (``frame_skip``
physics steps per env step on a second set of worlds of the same model, fresh random
controls each env step, no observation, reward, reset or state copy), both with the
launches replayed from a recording (as the env runs them) and launched from Python (MuJoCo
Warp used plainly); same task, number of envs and uniform random actions, in one run. The
four are timed in alternating rounds (a loaded machine drifts); the Warp runs' first steps
(kernel compile or cache load, the recording) are not timed. Rates are given per second of
wall time and per second of this process's CPU time (the fairer figure on a shared
machine: every row steps on one thread here); the Warp rows also in physics steps/s.

    python bench/bench_warp.py                       # HalfCheetah-v5, 512 envs, CPU
    python bench/bench_warp.py --num-envs 64 --steps 20 --rounds 5
    python bench/bench_warp.py --device cuda         # Warp on the GPU; Gymnasium on the CPU

Measured on this 2-core machine (other jobs running, load average 6.5-12: compare the
ratios and the CPU-time rates, not the wall figures), env steps/s per CPU second, median of
3 rounds (20 steps a round at 64 envs, 5 at 512):

    task         envs  gymnasium  Warp env  raw replayed  raw launched  env/gym  env/raw
    HalfCheetah   64     6,848     5,433       5,679           765       0.79     0.96
    HalfCheetah  512     7,015     6,461       6,626         3,503       0.92     0.98
    Hopper        64     3,062     2,902       2,994           278       0.95     0.97
    Hopper       512     3,291     2,992       3,045         1,217       0.91     0.98

The env runs at 0.96-0.98 of ``mujoco_warp.step`` alone: its own work (state copies in
and out, observation, reward, health, resets) is a few percent of a step. What the raw
"launched" column shows is the cost the recording removes: MuJoCo Warp packs and launches
each of its kernels from Python (about 100 launches per HalfCheetah physics step, 4 RK4
stages per Hopper one, plus the solver's iterations), 7-10 times the whole step at 64
worlds and about 2 times at 512. Before the env replayed its launches (issue 10) it ran
HalfCheetah at 924 and 3,314 env steps/s per CPU second (0.11 and 0.58 of Gymnasium).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import gymnasium
import torch


def _timed(step, actions) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``step(a)`` over ``actions``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for a in actions:
        step(a)
    return time.perf_counter() - wall, time.process_time() - cpu


class GymnasiumBackend:
    def __init__(self, env_id: str, num_envs: int, seed: int):
        self.envs = gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
        self.envs.action_space.seed(seed)
        self.envs.reset(seed=seed)

    def round(self, steps: int) -> tuple[float, float]:
        actions = [self.envs.action_space.sample() for _ in range(steps)]
        return _timed(self.envs.step, actions)


class WarpBackend:
    def __init__(self, env_id: str, num_envs: int, seed: int, device: str):
        from rl.envs.mujoco_warp import make_warp_env

        self.env = make_warp_env(env_id, num_envs, device=device, seed=seed)
        self.env.reset()
        space = self.env.single_action_space
        self.low = torch.as_tensor(space.low, device=self.env.device)
        self.high = torch.as_tensor(space.high, device=self.env.device)
        self.gen = torch.Generator(device=self.env.device).manual_seed(seed)
        self.round(3)  # compile or load the kernels, record the step

    def actions(self, steps: int) -> list[torch.Tensor]:
        env = self.env
        shape = (env.num_envs, *env.single_action_space.shape)
        draw = dict(generator=self.gen, device=env.device)
        return [self.low + (self.high - self.low) * torch.rand(shape, **draw) for _ in range(steps)]

    def round(self, steps: int) -> tuple[float, float]:
        actions = self.actions(steps)
        _sync(self.env.device)
        wall, cpu = _timed(self.env.step, actions)
        _sync(self.env.device)
        return wall, cpu


class RawWarpBackend:
    """The ceiling: ``mujoco_warp.step`` alone, ``frame_skip`` times per env step, on a
    second set of worlds of the env's model (a :class:`WarpSimulator`: same contact and
    constraint buffers), loaded at each round's start with the Warp env's current states,
    with fresh random actions written into ``ctrl`` at each env step as the env gets them;
    no observation, reward, reset or state copy. ``capture``: each env step's launches
    replayed from a recording, as the env does, or launched from Python (MuJoCo Warp used
    plainly)."""

    def __init__(self, warp: WarpBackend, capture: bool):
        from rl.envs._mujoco_sim import WarpSimulator

        env = warp.env
        self.warp, self.frame_skip = warp, env.frame_skip
        self.sim = WarpSimulator(env.mj_model, env.num_envs, env.device, njmax=env.njmax,
                                 capture=capture)
        self.round(3)

    def round(self, steps: int) -> tuple[float, float]:
        sim, env = self.sim, self.warp.env
        sim.load(env.get_state())
        ctrl = sim.views["ctrl"]

        def env_step(actions):
            ctrl.copy_(actions)
            sim.advance(self.frame_skip)

        actions = self.warp.actions(steps)
        _sync(env.device)
        wall, cpu = _timed(env_step, actions)
        _sync(env.device)
        return wall, cpu


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--num-envs", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="the Warp env's device")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warp = WarpBackend(args.env, args.num_envs, args.seed, args.device)
    backends = {
        "gymnasium (C MuJoCo, sync, CPU)": GymnasiumBackend(args.env, args.num_envs, args.seed),
        f"MuJoCo Warp env ({args.device})": warp,
        "raw mujoco_warp.step, replayed": RawWarpBackend(warp, capture=True),
        "raw mujoco_warp.step, launched": RawWarpBackend(warp, capture=False),
    }
    rates = {name: ([], []) for name in backends}
    for _ in range(args.rounds):
        for name, backend in backends.items():
            wall, cpu = backend.round(args.steps)
            rates[name][0].append(args.num_envs * args.steps / wall)
            rates[name][1].append(args.num_envs * args.steps / cpu)
    frame_skip = warp.env.frame_skip
    print(f"{args.env}, {args.num_envs} envs, {args.rounds} rounds of {args.steps} steps "
          f"(frame skip {frame_skip}), load average {os.getloadavg()[0]:.1f}")
    print(f"  {'median rates':34s} {'env steps/s wall':>17s} {'CPU':>8s} "
          f"{'physics steps/s wall':>21s} {'CPU':>8s}")
    medians = {n: [statistics.median(r) for r in rs] for n, rs in rates.items()}
    for name, (wall, cpu) in medians.items():
        physics = "" if name.startswith("gymnasium") else (
            f"{wall * frame_skip:21,.0f} {cpu * frame_skip:8,.0f}")
        print(f"  {name:34s} {wall:17,.0f} {cpu:8,.0f} {physics}")
    (g_wall, g_cpu), (w_wall, w_cpu), (r_wall, r_cpu), (l_wall, l_cpu) = medians.values()
    for name, (wall, cpu) in {"warp env / gymnasium": (g_wall, g_cpu),
                              "warp env / raw replayed": (r_wall, r_cpu),
                              "warp env / raw launched": (l_wall, l_cpu)}.items():
        print(f"  {'ratio ' + name:34s} {w_wall / wall:17.2f} {w_cpu / cpu:8.2f}")

if __name__ == "__main__":
    main()
