r"""Checkpoints that survive crashes: atomic writes, a previous good copy, integrity and
compatibility checks, and a "save and stop at the end of this generation" signal flag.

Public API (stable)::

    header = describe(optimizer=opt, policy=policy, env_id="HalfCheetah-v5", **extra)
    save_checkpoint(obj, path, header=header)   # atomic; the old file becomes path + ".prev"
    obj = load_checkpoint(path, expected=header)  # ValueError if corrupted or mismatched
    read_header(path) -> dict                   # the header alone (validated file)
    with GracefulExit() as stop:                # SIGTERM / SIGINT -> stop.requested = True
        ...
        if stop.requested: save_checkpoint(...); break

File format. One ``torch.save`` container of plain data, so ``torch.load(path,
weights_only=True)`` reads it: ``{"format": "evoopt.checkpoint/1", "header": {...},
"sha256": hex, "payload": obj}``. ``obj`` must be tensors and plain Python values (what
optimizers' and modules' ``state_dict`` return); ``sha256`` is a digest of the payload's
values (tensor bytes, dtypes, shapes, keys), because a flipped byte inside a tensor goes
unnoticed by ``torch.load``.

Atomic write. The checkpoint is written to a temporary file in the same directory,
flushed and ``fsync``-ed; then the current file is renamed to ``path + ".prev"`` and the
temporary file renamed to ``path`` (``os.replace``, atomic on POSIX), and the directory is
``fsync``-ed. A crash at any point leaves either the new file, or the old one, or (between
the two renames) only ``.prev``: never a partially written ``path``.

Loading. ``load_checkpoint`` refuses, with a ``ValueError`` saying why, a file that is not
a checkpoint, is truncated or garbage, or whose digest does not match; when the newest
file is missing or corrupted and ``path + ".prev"`` is good, it loads that one and says
so (``warnings.warn`` and the ``"rl.checkpoint"`` logger). A checkpoint whose header
differs from ``expected`` (e.g. another optimizer, popsize, parameter shapes, env) is
refused with a ``ValueError`` listing the differences; there is no fallback then, since
the previous file was written by the same run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import tempfile
import threading
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from evoopt.protocols import SearchesPopulation

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "read_header",
    "describe",
    "GracefulExit",
    "FORMAT",
]

FORMAT = "evoopt.checkpoint/1"
logger = logging.getLogger("rl.checkpoint")


# ------------------------------------------------------------------- header
def describe(
    *,
    optimizer: torch.optim.Optimizer | None = None,
    policy: nn.Module | None = None,
    env_id: str | None = None,
    **extra,
) -> dict[str, Any]:
    """A header of plain values that identifies what a checkpoint fits: the optimizer's
    class, popsize, maximize and parameter shapes; the policy's class and named parameter
    and buffer shapes; the env id; plus any ``extra`` plain values."""
    h: dict[str, Any] = {}
    if optimizer is not None:
        h["optimizer"] = type(optimizer).__name__
        h["param_shapes"] = [list(p.shape) for g in optimizer.param_groups for p in g["params"]]
        if isinstance(optimizer, SearchesPopulation):
            h["popsize"], h["maximize"] = optimizer.popsize, optimizer.maximize
    if policy is not None:
        h["policy"] = type(policy).__name__
        h["policy_shapes"] = {k: list(v.shape) for k, v in policy.state_dict().items()}
    if env_id is not None:
        h["env_id"] = env_id
    h.update(extra)
    return h


# ------------------------------------------------------------------- digest
def _digest(obj) -> str:
    h = hashlib.sha256()

    def walk(x) -> None:
        if isinstance(x, Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(f"D{len(x)}".encode())
            for k in sorted(x, key=repr):
                walk(k)
                walk(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(f"{'L' if isinstance(x, list) else 'U'}{len(x)}".encode())
            for v in x:
                walk(v)
        else:
            h.update(f"S{type(x).__name__}:{x!r};".encode())

    walk(obj)
    return h.hexdigest()


# --------------------------------------------------------------------- save
def save_checkpoint(
    obj: Any, path: str | os.PathLike, *, header: dict[str, Any] | None = None
) -> None:
    """Write ``obj`` (tensors and plain values) to ``path`` atomically, keeping the previous
    file as ``path + ".prev"``. ``header``: plain values checked by :func:`load_checkpoint`."""
    path = os.fspath(path)
    if header is not None and not isinstance(header, dict):
        raise ValueError(
            f"Invalid header: {type(header).__name__} (expected a dict of plain values)"
        )
    record = {
        "format": FORMAT,
        "header": dict(header or {}),
        "sha256": _digest(obj),
        "payload": obj,
    }
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it the usual mode
        if os.path.exists(path):
            os.replace(path, path + ".prev")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. a platform without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------- load
class _Corrupt(Exception):
    pass


def _read(path: str) -> dict[str, Any]:
    try:
        record = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated, garbage, or not plain data
        first = (str(e).strip().splitlines() or [""])[0][:120]
        detail = f"{type(e).__name__}: {first}" if first else type(e).__name__
        raise _Corrupt(f"{path!r} cannot be read: it is truncated, overwritten or not a file "
                       f"written by torch.save (torch.load says {detail})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise _Corrupt(f"{path!r} is not an evoopt checkpoint (expected format {FORMAT!r})")
    if not isinstance(record.get("header"), dict) or "payload" not in record:
        raise _Corrupt(f"{path!r} lacks a header or a payload")
    if _digest(record["payload"]) != record.get("sha256"):
        raise _Corrupt(f"{path!r} is corrupted (its sha256 digest does not match its contents)")
    return record


def _read_with_fallback(path: str) -> dict[str, Any]:
    prev = path + ".prev"
    try:
        return _read(path)
    except (FileNotFoundError, _Corrupt) as e:
        why = f"{path!r} does not exist" if isinstance(e, FileNotFoundError) else str(e)
        if not os.path.exists(prev):
            if isinstance(e, FileNotFoundError):
                raise FileNotFoundError(f"no checkpoint at {path!r} (nor {prev!r})") from None
            raise ValueError(
                f"Invalid checkpoint: {why}; no previous checkpoint {prev!r} to fall back to"
            ) from None
        try:
            record = _read(prev)
        except _Corrupt as e2:
            raise ValueError(
                f"Invalid checkpoint: {why}; and the previous one: {e2}. Neither can be "
                f"resumed: move both away to start a fresh run in {os.path.dirname(path) or '.'}"
            ) from None
        msg = f"{why}; loading the previous good checkpoint {prev!r} instead"
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        return record


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The header of the checkpoint :func:`load_checkpoint` would load."""
    return _read_with_fallback(os.fspath(path))["header"]


def load_checkpoint(path: str | os.PathLike, expected: dict[str, Any] | None = None) -> Any:
    """The object saved at ``path`` (or, if that file is missing or corrupted, at
    ``path + ".prev"``, with a warning). ``expected``: header entries that must match."""
    path = os.fspath(path)
    record = _read_with_fallback(path)
    if expected is not None:
        saved = record["header"]
        diffs = [
            f"{k}: saved {saved.get(k, '<missing>')!r}, expected {v!r}"
            for k, v in expected.items()
            if saved.get(k, _MISSING) != v
        ]
        if diffs:
            raise ValueError(
                f"Invalid checkpoint: {path!r} does not match this run ({'; '.join(diffs)})"
            )
    return record["payload"]


_MISSING = object()


# ---------------------------------------------------------------- signals
class GracefulExit:
    """Turn SIGTERM / SIGINT into a flag: ``requested`` becomes True and the loop saves and
    stops at the end of its generation. A second signal acts as usual (SIGINT raises
    ``KeyboardInterrupt``, SIGTERM terminates). Handlers are installed on ``__enter__``
    (main thread only; elsewhere the flag just stays False) and restored on ``__exit__``."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signals = tuple(signals)
        self.requested = False
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:  # second signal: restore and act as without us
            self._restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(signum)
            return
        self.requested = True
        self.signal = signum
        logger.warning(
            "%s received: saving and stopping at the end of this generation "
            "(send it again to stop now)",
            signal.Signals(signum).name,
        )

    def request(self) -> None:
        """Ask for a stop, as a signal would."""
        self.requested = True

    def _restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}

    def __enter__(self) -> GracefulExit:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()
