"""Env steps per second: MuJoCo Warp (``rl.envs.mujoco_warp``) against Gymnasium's C MuJoCo
envs (``gymnasium.make_vec(..., vectorization_mode="sync")``, the gymnasium backend's
in-process stepping), the same task, number of envs and uniform random actions, measured
in one run. The Warp env's first steps (kernel compile or cache load) are not timed.

    python bench/bench_warp.py                       # HalfCheetah-v5, 512 envs, CPU
    python bench/bench_warp.py --num-envs 64 --steps 50
    python bench/bench_warp.py --device cuda         # Warp on the GPU; Gymnasium on the CPU

Measured on this 2-core CPU machine (torch and Warp on the CPU, 1 torch thread, other
jobs running: compare the ratio, not the absolute figures): see the issue notes.
"""

from __future__ import annotations

import argparse
import time

import gymnasium
import torch


def gymnasium_steps_per_s(env_id: str, num_envs: int, steps: int, seed: int) -> float:
    envs = gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
    envs.action_space.seed(seed)
    envs.reset(seed=seed)
    actions = [envs.action_space.sample() for _ in range(steps)]
    start = time.perf_counter()
    for a in actions:
        envs.step(a)
    elapsed = time.perf_counter() - start
    envs.close()
    return num_envs * steps / elapsed


def warp_steps_per_s(env_id: str, num_envs: int, steps: int, seed: int, device: str) -> float:
    from rl.envs.mujoco_warp import make_warp_env

    env = make_warp_env(env_id, num_envs, device=device, seed=seed)
    env.reset()
    space = env.single_action_space
    low = torch.as_tensor(space.low, device=env.device)
    high = torch.as_tensor(space.high, device=env.device)
    gen = torch.Generator(device=env.device).manual_seed(seed)
    shape = (num_envs, *space.shape)
    actions = [
        low + (high - low) * torch.rand(shape, generator=gen, device=env.device)
        for _ in range(steps + 2)
    ]
    for a in actions[:2]:  # compile / load the kernels
        env.step(a)
    _sync(env.device)
    start = time.perf_counter()
    for a in actions[2:]:
        env.step(a)
    _sync(env.device)
    elapsed = time.perf_counter() - start
    env.close()
    return num_envs * steps / elapsed


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--num-envs", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per backend")
    parser.add_argument("--device", default="cpu", help="the Warp env's device")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    gym_rate = gymnasium_steps_per_s(args.env, args.num_envs, args.steps, args.seed)
    warp_rate = warp_steps_per_s(args.env, args.num_envs, args.steps, args.seed, args.device)
    print(f"{args.env}, {args.num_envs} envs, {args.steps} steps")
    print(f"  gymnasium (C MuJoCo, sync, CPU)  {gym_rate:12,.0f} env steps/s")
    print(f"  MuJoCo Warp ({args.device})            {warp_rate:12,.0f} env steps/s")
    print(f"  ratio warp / gymnasium           {warp_rate / gym_rate:12.2f}")


if __name__ == "__main__":
    main()
