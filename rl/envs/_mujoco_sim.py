"""``WarpSimulator``: ``num_worlds`` copies of one MuJoCo model in MuJoCo Warp, read and
written as torch tensors on the same device (zero-copy views through ``wp.to_torch``).

The simulator holds no episode state of its own: :meth:`WarpSimulator.step` loads the
state it is given (``qpos``, ``qvel``, ``qacc_warmstart``) into the Warp arrays, steps, and
returns the views, which the caller copies before the next call. The state that carries
from one MuJoCo step to the next is exactly these three arrays for the Gymnasium
locomotion models (no activations, mocap bodies, plugins or sleeping islands; ``time`` is
not read by any of them), so a copied state resumes a run exactly.

Graph replay: a MuJoCo step is a few hundred Warp kernel launches (about 100 for
HalfCheetah, plus up to ``opt.iterations`` solver iterations), each packed and launched from
Python, which costs more than the kernels themselves at a few hundred worlds on a CPU. With
``capture=True`` (the default) the simulator runs each sequence it is asked for (``num_steps``
steps, with or without ``mj_rnePostConstraint``; a forward pass) plainly once, which loads the
kernels, then records it once with ``wp.ScopedCapture`` and from then on replays the
recording: on a CPU Warp 1.19 records the launches into its API capture (APIC) stream and
replays them in C++, on a GPU it records a CUDA graph (on the torch stream current at
capture), the solver's early exit included (``capture_while``). The recording holds the
addresses of the Warp arrays, which is why the simulator writes its inputs into the same
arrays (through the torch views) and never reallocates them (Warp keeps the arrays a
recording allocated alive with it). Replayed and plain steps agree bit for bit
(``tests/rl/envs/test_mujoco_warp.py``); on this 2-core CPU replay makes a step 7-10 times
faster at 64 worlds (HalfCheetah, Hopper) and about 2 times at 512 (``bench/bench_warp.py``).
On a GPU the recording is made on a side stream (CUDA cannot record on torch's legacy default
stream) and replayed on torch's current one; this path is exercised only by
``bench/gpu_check.py`` (the CPU machine has no CUDA); if recording fails the simulator warns
and launches plainly.

MuJoCo Warp computes in float32 (C MuJoCo in float64) and compiles its kernels on first use
(about 15 s per model on this machine's CPU, cached under ``~/.cache/warp``). Its CPU
kernels run on one thread each: it is built for GPUs.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

__all__ = ["WARP_FIX", "WarpSimulator", "import_warp", "load_model"]

WARP_FIX = 'pip install -e ".[warp]"'
STATE = ("qpos", "qvel", "qacc_warmstart")


def import_warp():
    """``(mujoco, warp, mujoco_warp)``, or an ``ImportError`` that names the fix."""
    try:
        import mujoco
        import warp

        # before mujoco_warp initialises Warp: no banner, no per-kernel load lines
        warp.config.log_level = max(warp.config.log_level, warp.LOG_WARNING)
        import mujoco_warp
    except ImportError as err:
        raise ImportError(
            f"MuJoCo envs on a torch device need mujoco-warp and warp-lang ({err}); "
            f"install them with `{WARP_FIX}` (the [warp] extra), or use the gymnasium backend"
        ) from err
    return mujoco, warp, mujoco_warp


def load_model(xml_path: str):
    """``mujoco.MjModel`` of an MJCF file (the C model: sizes, ranges, masses)."""
    mujoco, _, _ = import_warp()
    return mujoco.MjModel.from_xml_path(xml_path)


def _warp_device(wp, device: torch.device):
    if device.type == "cpu":
        return wp.get_device("cpu")
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return wp.get_device(f"cuda:{index}")
    raise ValueError(f"Invalid device: {device} (MuJoCo Warp runs on 'cpu' or 'cuda')")


def _can_collide(mj_model) -> bool:
    """Whether any two geoms can touch: an explicit ``<pair>``, a flex, or a ``contype`` /
    ``conaffinity`` bit in common (MuJoCo's filter; the parent and same-body filters are
    ignored, so ``True`` may be a false alarm, never a miss). Swimmer's geoms all have
    ``contype = conaffinity = 0``: without contacts its collision pipeline is pure cost (a third
    of its step on this CPU), bit for bit nothing."""
    contype, conaffinity = mj_model.geom_contype, mj_model.geom_conaffinity
    touching = (contype[:, None] & conaffinity[None, :]) != 0
    return bool(mj_model.npair > 0 or mj_model.nflex > 0 or touching.any())


class WarpSimulator:
    """``num_worlds`` worlds of the MuJoCo model ``mj_model`` on ``device``.

    Args:
        mj_model: a ``mujoco.MjModel`` (loaded from Gymnasium's own assets for the v5 tasks).
        num_worlds: number of worlds, one per env.
        device: torch device; Warp runs on the matching device (``cpu`` or ``cuda:i``).
        fields: extra ``mujoco_warp.Data`` fields to expose as views (``xpos``, ``cfrc_ext``...).
        njmax: constraint rows allocated per world (MuJoCo Warp's guess by default; a world
            that needs more drops rows and MuJoCo Warp prints an overflow warning).
        capture: replay recorded launch sequences (see the module docstring); ``False``
            launches every kernel from Python on every call.
    """

    def __init__(
        self, mj_model, num_worlds: int, device: torch.device, fields=(), njmax=None,
        capture: bool = True,
    ):
        _, wp, mjw = import_warp()
        self._wp, self._mjw = wp, mjw
        wp.init()
        self.mj_model = mj_model
        self.device = device
        self.wp_device = _warp_device(wp, device)
        self.capture = bool(capture)
        self._graphs: dict[tuple, object] = {}  # sequence key -> its recording (None: ran once)
        with wp.ScopedDevice(self.wp_device):
            self.model = mjw.put_model(self.mj_model)
            nconmax = None if _can_collide(mj_model) else 0  # 0: collision detection skipped
            self.data = mjw.make_data(mj_model, nworld=num_worlds, nconmax=nconmax, njmax=njmax)
        names = (*STATE, "ctrl", *fields)
        self.views = {name: wp.to_torch(getattr(self.data, name)) for name in names}

    def _run(self, key: tuple, launches) -> None:
        """Run ``launches()`` (a sequence of Warp launches on ``self.data``) on the device (on a
        GPU, on torch's current stream): plainly on its first call, which loads the kernels,
        then from a recording made on the second (see the module docstring)."""
        wp = self._wp
        if self.capture and key in self._graphs and self._graphs[key] is None:
            self._graphs[key] = self._record(launches)
        graph = self._graphs.setdefault(key, None)
        stream = None
        if self.wp_device.is_cuda:
            stream = wp.stream_from_torch(torch.cuda.current_stream(self.device))
        if graph is not None:
            wp.capture_launch(graph, stream=stream)
            return
        with wp.ScopedDevice(self.wp_device) if stream is None else wp.ScopedStream(stream):
            launches()

    def _record(self, launches):
        """The recording of ``launches()`` (nothing runs), or ``None`` with a warning if Warp
        cannot record it (the simulator then launches plainly from here on)."""
        wp = self._wp
        try:
            if self.wp_device.is_cuda:  # CUDA cannot record on the legacy default stream
                stream = wp.Stream(self.wp_device)
                with wp.ScopedStream(stream), wp.ScopedCapture(stream=stream) as capture:
                    launches()
            else:
                with wp.ScopedDevice(self.wp_device), wp.ScopedCapture(self.wp_device) as capture:
                    launches()
        except Exception as err:  # noqa: BLE001 (any capture failure: fall back to launches)
            warnings.warn(f"Warp graph capture failed, launching plainly: {err}", stacklevel=4)
            self.capture = False
            return None
        return capture.graph

    def load(self, state: dict[str, Tensor]) -> None:
        """Copy ``qpos``, ``qvel`` and ``qacc_warmstart`` ``[n, ...]`` into the first ``n``
        worlds (the others keep whatever they hold)."""
        for name in STATE:
            self.views[name][: len(state[name])].copy_(state[name])

    def step(self, state: dict[str, Tensor], ctrl: Tensor, num_steps: int, post_constraint=False):
        """Load ``state``, set ``ctrl`` (MuJoCo clamps it to ``ctrlrange`` where the model
        says so) and run ``num_steps`` MuJoCo steps, then ``mj_rnePostConstraint`` (for
        ``cfrc_ext``) if asked, as Gymnasium does after every step. Returns the views."""
        if len(state["qpos"]) != len(self.views["qpos"]):
            raise ValueError(f"step needs all {len(self.views['qpos'])} worlds' states")
        self.load(state)
        self.views["ctrl"].copy_(ctrl)
        return self.advance(num_steps, post_constraint)

    def advance(self, num_steps: int, post_constraint=False):
        """Run ``num_steps`` MuJoCo steps (then ``mj_rnePostConstraint`` if asked) from the
        states and controls the worlds hold. Returns the views."""
        mjw, model, data = self._mjw, self.model, self.data

        def launches():
            for _ in range(num_steps):
                mjw.step(model, data)
            if post_constraint:
                mjw.rne_postconstraint(model, data)

        self._run(("step", num_steps, bool(post_constraint)), launches)
        return self.views

    def forward(self, state: dict[str, Tensor]):
        """Load ``state`` (``n`` rows) with ``ctrl = 0`` and run ``mj_forward`` (positions,
        velocities and forces of that state, as after Gymnasium's ``set_state``). Returns
        the views, whose first ``n`` rows are the results."""
        self.load(state)
        self.views["ctrl"].zero_()
        self._run(("forward",), lambda: self._mjw.forward(self.model, self.data))
        return self.views
