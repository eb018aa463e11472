"""A whole PGPE generation on CartPole-v1 (``opt.step(objective)``: sampling, every
member's episode, the normaliser's update and the optimizer's update), the torch backend
of ``PopulationRollout`` against its Gymnasium backend, ratios measured in one run.

The setting is tests/rl/test_pgpe_cartpole.py's (linear policy with observation
normalisation, PGPE + ClipUp, EvoTorch's CartPole hyperparameters) at a large popsize.
Two centers: ``zero`` (generation 0: most episodes end within ~10-30 steps) and
``balancing`` (a linear controller that holds the pole: many members play long episodes,
the regime where training spends its time). Each round replays the same generation (the
policy, the optimizer and the rollout's state are restored), the rounds interleaved across
backends so that load from other processes hits both alike; figures are the best round in
process CPU time with ``--threads 1`` (wall time with a synchronisation on CUDA). Printed:
seconds per generation, env steps per second and the torch/Gymnasium speed ratio.

    PYTHONPATH=. python bench/bench_device_rollout.py [--popsize 4096] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy

import gymnasium as gym
import torch

from evoopt import PGPE, ClipUp
from rl import PopulationRollout, make_policy

from bench_envs import _clock  # a sibling script: CUDA wall time, else process time

MAX_SPEED = 0.15
CENTERS = {"zero": None, "balancing": [[0.0, 0.0, -1.0, -1.0], [0.0, 0.0, 1.0, 1.0]]}



class Generation:
    """One backend's objective; :meth:`run` replays the same generation from ``center``."""

    def __init__(self, backend: str, popsize: int, device: str, seed: int = 0, compile=False):
        self.policy = make_policy(gym.make("CartPole-v1"), kind="linear", obs_norm=True)
        self.policy.to(device)
        kw = {} if backend == "gymnasium" else {"device": device, "compile": compile}
        self.objective = PopulationRollout("CartPole-v1", self.policy, popsize, seed=seed,
                                           backend=backend, **kw)
        self.popsize, self.seed = popsize, seed
        self.initial = copy.deepcopy(self.objective.state_dict())

    def _optimizer(self):
        lr = 0.75 * MAX_SPEED
        return PGPE(self.policy.parameters(), popsize=self.popsize, lr=lr,
                    radius_init=15 * MAX_SPEED, stdev_lr=0.1, stdev_max_change=0.2,
                    seed=self.seed,
                    optimizer=lambda g: ClipUp(g, lr=lr, momentum=0.9, max_speed=MAX_SPEED))

    def run(self, center, clock) -> tuple[float, int]:
        """Seconds for one generation and the env steps it took."""
        with torch.no_grad():
            for p in self.policy.parameters():
                p.zero_()
            if center is not None:
                self.policy.layers[0].weight.copy_(torch.tensor(center))
        self.objective.load_state_dict(copy.deepcopy(self.initial))
        opt = self._optimizer()
        start = clock()
        opt.step(self.objective)
        return clock() - start, self.objective.last.num_steps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--popsize", type=int, default=4096)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock = _clock(device)
    gens = {"gymnasium": Generation("gymnasium", args.popsize, args.device),
            "torch": Generation("torch", args.popsize, args.device),
            "torch compiled": Generation("torch", args.popsize, args.device, compile=True)}
    for gen in gens.values():  # build the envs, compile
        gen.run(None, clock)
    print(f"PGPE generation, CartPole-v1, popsize {args.popsize}, {args.threads} thread(s), "
          f"torch on {device}")
    for name, center in CENTERS.items():
        best = {b: (float("inf"), 0) for b in gens}
        for _ in range(args.repeats):
            for b, gen in gens.items():
                best[b] = min(best[b], gen.run(center, clock))
        for b, (sec, steps) in best.items():
            print(f"  center {name:9s} {b:14s}: {sec:7.3f} s/generation, {steps:8d} steps, "
                  f"{steps / sec / 1e6:6.2f} M steps/s")
        for b in ("torch", "torch compiled"):
            ratio = best["gymnasium"][0] / best[b][0]
            print(f"  center {name:9s} {b} / gymnasium speed: {ratio:.2f}x")


if __name__ == "__main__":
    main()
