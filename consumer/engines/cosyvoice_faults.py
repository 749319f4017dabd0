"""What a CosyVoice exception means for the worker: out of memory (split the batch and retry),
a broken CUDA context (restart the process), a bad input (this request fails) or anything else
(a transient failure). Shared by the official path and the batched one."""

from __future__ import annotations

from consumer.errors import FatalError


class AcceleratorFailed(FatalError):
    """The CUDA context is broken (illegal access, device assert): only a restart helps."""


def failure_class(exc: BaseException) -> str:
    """The kind of a model exception: oom, device (the CUDA context is broken), input (this
    request will fail again) or transient."""
    import torch

    message = str(exc).lower()
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in message:
        return "oom"
    if "failed to allocate memory" in message:  # onnxruntime's CUDA allocator
        return "oom"
    if isinstance(exc, RuntimeError) and any(
        marker in message for marker in ("illegal memory access", "device-side assert", "cuda error")
    ):
        return "device"
    if isinstance(exc, (AssertionError, ValueError, KeyError, IndexError)):
        return "input"
    return "transient"


def empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
