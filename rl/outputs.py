"""What a training run writes into its ``run_dir``: ``config.json``, ``metrics.csv`` (the
fixed columns :data:`COLUMNS`), TensorBoard scalars in ``tb/`` (when ``tensorboard`` is
installed), ``checkpoint.pt`` (and ``checkpoint.pt.prev``), ``policy.pt`` and
``curve.png`` (when matplotlib is installed). :class:`RunOutputs` keeps the list of the
files it wrote, so that the command line can name them all.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any

from .checkpoint import load_checkpoint, read_header, save_checkpoint

__all__ = ["COLUMNS", "RunOutputs", "read_csv", "plot_curve"]

#: CSV columns, the same for every optimizer (empty where an optimizer has no such number).
COLUMNS = (
    "iteration", "env_steps", "train_return", "train_return_max", "eval_return", "eval_return_std",
    "learning_rate", "sigma", "policy_loss", "value_loss", "entropy", "approx_kl", "time_s",
)


class RunOutputs:
    """The files of one run in ``run_dir``; every method does nothing when it is None."""

    def __init__(self, run_dir: str | None, *, tensorboard: bool = True):
        self.run_dir = run_dir
        self.files: list[str] = []  # written so far, in order
        self.checkpoint_iteration: int | None = None  # iterations in the last checkpoint saved
        self._tensorboard = tensorboard
        self._writer = None
        if run_dir is not None:
            os.makedirs(run_dir, exist_ok=True)

    def path(self, name: str) -> str | None:
        return None if self.run_dir is None else os.path.join(self.run_dir, name)

    def _wrote(self, path: str) -> None:
        if path not in self.files:
            self.files.append(path)

    # ------------------------------------------------------------ checkpoints
    def has_checkpoint(self) -> bool:
        ck = self.path("checkpoint.pt")
        return ck is not None and (os.path.exists(ck) or os.path.exists(ck + ".prev"))

    def load_checkpoint(self, header: dict[str, Any]) -> Any:
        """The saved run, refused (``ValueError`` listing the differences) when its header
        differs from ``header``. A checkpoint written before configs were recorded in
        headers is checked on the rest of the header only."""
        path = self.path("checkpoint.pt")
        saved = read_header(path)
        expected = dict(header)
        if any(k.startswith("config.") for k in saved):
            for k in saved:  # a setting the saved run had and this one lacks is a difference too
                if k.startswith("config.") and k not in expected:
                    expected[k] = None
        else:
            expected = {k: v for k, v in expected.items() if not k.startswith("config.")}
        try:
            return load_checkpoint(path, expected=expected)
        except ValueError as e:
            if "does not match this run" not in str(e):
                raise
            raise ValueError(f"{e}. Resume with the saved run's settings (its config.json), or "
                             "start this one in another run_dir") from None

    def save_checkpoint(self, obj: dict[str, Any], header: dict[str, Any], iteration: int) -> None:
        """Atomically (see :mod:`rl.checkpoint`)."""
        path = self.path("checkpoint.pt")
        if path is None:
            return
        save_checkpoint(obj, path, header=header)
        self.checkpoint_iteration = iteration
        self._wrote(path)
        if os.path.exists(path + ".prev"):
            self._wrote(path + ".prev")

    # ---------------------------------------------------------------- metrics
    def start(self, config: dict[str, Any], history: list[dict[str, float]]) -> None:
        """Write ``config.json`` and ``metrics.csv`` (the rows so far); open TensorBoard."""
        if self.run_dir is None:
            return
        path = self.path("config.json")
        with open(path, "w") as f:
            json.dump(config, f, indent=1)
        self._wrote(path)
        path = self.path("metrics.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for r in history:
                w.writerow([_fmt(r[c]) for c in COLUMNS])
        self._wrote(path)
        if self._tensorboard:
            self._writer = _tensorboard(self.run_dir)
            if self._writer is not None:
                self._wrote(os.path.join(self.run_dir, "tb") + os.sep)

    def add_row(self, row: dict[str, float]) -> None:
        if self.run_dir is None:
            return
        with open(self.path("metrics.csv"), "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row[c]) for c in COLUMNS])
        if self._writer is not None:
            for k in COLUMNS[2:]:
                if not math.isnan(row[k]):
                    self._writer.add_scalar(k, row[k], row["env_steps"])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ----------------------------------------------------------------- at the end
    def finish(self, save_policy, plot: bool) -> None:
        """``save_policy(path)`` writes ``policy.pt``; then ``curve.png`` when ``plot``."""
        if self.run_dir is None:
            return
        path = self.path("policy.pt")
        save_policy(path)
        self._wrote(path)
        if plot and plot_curve(self.path("metrics.csv"), self.path("curve.png")):
            self._wrote(self.path("curve.png"))


def _fmt(v) -> str:
    if isinstance(v, float) and math.isnan(v):
        return ""
    return repr(v) if isinstance(v, float) else str(v)


def read_csv(path: str) -> list[dict[str, float]]:
    """The rows of a metrics CSV as floats (NaN for empty cells)."""
    with open(path, newline="") as f:
        return [{k: (float(v) if v != "" else math.nan) for k, v in r.items()}
                for r in csv.DictReader(f)]


def _tensorboard(run_dir: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional dependency
        return None
    return SummaryWriter(os.path.join(run_dir, "tb"))


def plot_curve(csv_path: str, out_png: str) -> str | None:
    """Plot train and eval return against env steps; returns the PNG path, or None when
    matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = read_csv(csv_path)
    train_pts = [(r["env_steps"], r["train_return"]) for r in rows
                 if not math.isnan(r["train_return"])]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train_pts:
        ax.plot(*zip(*train_pts), lw=1, alpha=0.6,
                label="train return (episodes ended in the iteration)")
    ev = [(r["env_steps"], r["eval_return"]) for r in rows if not math.isnan(r["eval_return"])]
    if ev:
        ax.plot(*zip(*ev), "o-", ms=3, label="eval return (deterministic)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    if train_pts or ev:  # (a run stopped in its first iteration may have no point yet)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
