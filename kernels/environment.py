"""What the torch side of a run ran on, for the record's `environment` block (kdtui.core.provenance
adds the package, checkout, Python and host): library versions, the device, and the numeric settings
in force. Read after `engine.resolve_device`, which sets cuDNN's benchmark mode and TF32 on CUDA."""
from __future__ import annotations

from pathlib import Path

import torch

from .precision import Precision


def torch_environment(device: torch.device) -> dict:
    try:
        import torchvision
        torchvision_version = torchvision.__version__
    except ImportError:  # pragma: no cover - a hard dependency; a broken install still records the rest
        torchvision_version = None
    on_cuda = device.type == "cuda"
    return {
        "torch": torch.__version__,
        "torchvision": torchvision_version,
        "cuda": torch.version.cuda,  # the CUDA torch was built with; None for a CPU build
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": torch.cuda.get_device_name(device) if on_cuda else _cpu_name(),
        "device_count": torch.cuda.device_count() if on_cuda else 1,
        "threads": torch.get_num_threads(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        # The dtype of training forwards (float32: no autocast); evaluation is always fp32.
        "autocast_dtype": str(Precision.for_device(device).dtype).removeprefix("torch."),
    }


def _cpu_name() -> str:
    """The CPU's model ("cpu" where the system does not say): float results can differ across them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip() or "cpu"
    except OSError:
        pass
    import platform
    return platform.processor() or "cpu"
