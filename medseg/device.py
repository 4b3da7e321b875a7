"""The one place a device name becomes a ``torch.device``: inference, training and batch use it.

``"auto"`` means CUDA when PyTorch sees a GPU, else the CPU. An explicit ``"cuda"`` / ``"cuda:N"``
that cannot be honoured is an error naming the ``device`` option (the CLI shows ``--device``),
never a silent fall-back to the CPU: a user who asked for a GPU wants to know.
"""

from __future__ import annotations

from medseg.errors import MedsegError, option

__all__ = ["resolve_device", "DEVICE_CHOICES"]

#: What every front end offers (plus ``cuda:N``).
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto"):
    """``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> torch.device.

    Raises
    ------
    MedsegError
        CUDA is asked for but not available, the GPU index does not exist, or the name is not a
        device.
    """
    import torch

    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise MedsegError(option("device", device), f"CUDA was asked for but is not available ({why}, "
                              f"torch {torch.__version__})", f"use {option('device', 'cpu')} or "
                              f"{option('device', 'auto')}")
        suffix = text.split(":", 1)[1] if ":" in text else "0"
        if not suffix.isdigit():
            raise MedsegError(option("device", device), "is not a device", "use auto, cpu, cuda or cuda:N")
        index = int(suffix)
        if index >= torch.cuda.device_count():
            raise MedsegError(option("device", device), f"there is no GPU {index} "
                              f"({torch.cuda.device_count()} visible)", f"use {option('device', 'cuda:0')}")
        return torch.device("cuda", index)
    raise MedsegError(option("device", device), "is not a device", "use auto, cpu, cuda or cuda:N")
