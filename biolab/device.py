"""The device a model runs on, chosen in one place: what the user asked for, checked against this
machine before any work, or the best one here."""

from __future__ import annotations

import torch

from biolab.errors import ConfigError


def pick_device(asked: str | None = None) -> str:
    """``asked`` (e.g. ``cuda``, ``cuda:1``, ``cpu``) if this machine has it, else a one-line error;
    None: CUDA when available, else the CPU."""
    if asked is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(asked)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={asked!r} is not a device name (cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={asked}: this machine has no CUDA device (pass device=cpu or none)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device={asked}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={asked}: this machine has no Apple MPS device")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={asked}: biolab runs on cpu, cuda or mps")
    return str(device)
