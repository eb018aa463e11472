"""Gymnasium envs for the population rollouts: ids checked against the registry, envs
built with their native stderr passed on once, and the pool of envs a rollout reuses.

    resolve_env_id(env_id)     # the EnvSpec, or a ValueError listing close matches
    make_env(env, **kwargs)    # gymnasium.make (or env()), native prints passed on once
    EnvPool(env, env_kwargs, max_episode_steps)   # single envs + cached native vector envs
"""

from __future__ import annotations

import difflib
import os
import sys
import tempfile
from typing import Any

import gymnasium as gym

__all__ = ["NATIVE_CLASSES", "EnvPool", "make_env", "resolve_env_id"]

#: Gymnasium's native vector envs that can seed every slot (``vectorization="native"``).
NATIVE_CLASSES = {"CartPoleVectorEnv"}
#: Lines envs printed on stderr while being built that were passed on already (once each).
SEEN_STDERR_LINES: set[str] = set()


def resolve_env_id(env_id: str) -> gym.envs.registration.EnvSpec:
    """The registered spec of ``env_id``; a ``ValueError`` lists close matches otherwise."""
    try:
        return gym.spec(env_id)
    except gym.error.Error:
        close = difflib.get_close_matches(env_id, list(gym.envs.registry.keys()), n=5, cutoff=0.6)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ValueError(f"Invalid env: unknown Gymnasium id {env_id!r}{hint}") from None


def make_env(env, **kwargs):
    """``gymnasium.make(env, **kwargs)`` (or ``env()`` for a constructor), with what the
    env's native code prints on stderr while it is built passed on once per process.

    MuJoCo's compiler prints its warnings (HalfCheetah's "compiler attribute 'settotalmass'
    is deprecated") from C, not through Python's ``warnings``, so they would repeat for
    every env a run builds. The stderr file descriptor is captured during construction;
    each line not seen before is written to stderr, a repeated line is dropped.
    """
    build = env if callable(env) else (lambda: gym.make(env, **kwargs))
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no stderr descriptor: build as is
        return build()
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            return build()
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            new = [ln for ln in text.splitlines(keepends=True) if ln not in SEEN_STDERR_LINES]
            SEEN_STDERR_LINES.update(new)
            if new:
                os.write(2, "".join(new).encode())


class EnvPool:
    """A growing list of single envs (the synchronous backend) plus cached native vector
    envs keyed by their number of slots."""

    def __init__(self, env, env_kwargs: dict[str, Any], max_episode_steps: int | None):
        self.env = env
        self.env_kwargs = env_kwargs
        self.max_episode_steps = max_episode_steps
        self.envs: list[gym.Env] = []
        self.native: dict[int, gym.vector.VectorEnv] = {}

    def _kwargs(self) -> dict[str, Any]:
        kw = dict(self.env_kwargs)
        if self.max_episode_steps is not None:
            kw["max_episode_steps"] = self.max_episode_steps
        return kw

    def make_one(self) -> gym.Env:
        return make_env(self.env) if callable(self.env) else make_env(self.env, **self._kwargs())

    def replace(self, j: int) -> None:
        """Swap single env ``j`` (which raised) for a fresh one."""
        try:
            self.envs[j].close()
        except Exception:  # noqa: BLE001 - a broken env may fail to close too
            pass
        self.envs[j] = self.make_one()

    def singles(self, n: int) -> list[gym.Env]:
        while len(self.envs) < n:
            self.envs.append(self.make_one())
        return self.envs[:n]

    def vector(self, n: int) -> gym.vector.VectorEnv:
        if n not in self.native:
            self.native[n] = make_env(lambda: gym.make_vec(
                self.env, num_envs=n, vectorization_mode="vector_entry_point", **self._kwargs()))
        return self.native[n]

    def close(self) -> None:
        for e in self.envs:
            e.close()
        for v in self.native.values():
            v.close()
        self.envs, self.native = [], {}
