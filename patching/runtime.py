"""Process set-up for long CPU/GPU runs: :func:`configure_process`, called once.

The command line (:func:`circuits.cli.main`) and the notebooks call it before any
model work; it changes no number a run reports (docs/dependencies.md#cpu-speed).
"""

from __future__ import annotations

import os

__all__ = ["configure_process"]


def configure_process() -> None:
    """Set up this process for the toolkit's runs; safe to call more than once.

    * ``OMP_WAIT_POLICY=PASSIVE`` (unless already set): torch's OpenMP threads
      spin when another process shares the cores; passive waiting avoids 10x
      slowdowns. OpenMP reads it when torch starts, so call this before the first
      ``import torch`` for it to take effect (later calls still set the rest).
    * ``torch.set_flush_denormal(True)``: random-ish weights make denormal floats,
      which slow CPUs 10-100x at random; flushing them changes no reported digit.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_flush_denormal(True)
