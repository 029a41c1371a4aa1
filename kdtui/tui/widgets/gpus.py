"""One line under the header with each GPU's utilisation and memory, read through NVML.

Only where there is something to show: without `nvidia-ml-py` (the `gpu` extra, module `pynvml`),
without a driver, or without a GPU the widget stays hidden and reads nothing again. NVML is the
driver's own counter for every process on the device (the runs are other processes, so torch in
this one could not see them), and it costs no GPU memory.
"""
from __future__ import annotations

from dataclasses import dataclass

from textual.widgets import Static

GPU_REFRESH_S = 2.0
GIB = 2**30


@dataclass(frozen=True)
class GpuReading:
    index: int
    utilization: int        # percent of the last sample period the GPU was busy
    memory_used: int        # bytes
    memory_total: int       # bytes


_NVML = None   # pynvml once initialised; False when it cannot be (no module, driver or GPU)


def _nvml():
    global _NVML
    if _NVML is None:
        try:
            import pynvml
        except ImportError:   # no `gpu` extra
            _NVML = False
            return None
        try:
            pynvml.nvmlInit()   # once per process: the driver keeps the handle
            _NVML = pynvml
        except pynvml.NVMLError:   # no driver library, no device
            _NVML = False
    return _NVML or None


def read_gpus() -> list[GpuReading]:
    """Every GPU's reading now; [] without pynvml, a driver or a GPU."""
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        readings = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            utilization = nvml.nvmlDeviceGetUtilizationRates(handle)
            readings.append(GpuReading(index, int(utilization.gpu), int(memory.used), int(memory.total)))
        return readings
    except nvml.NVMLError:   # a device that stopped answering: show nothing rather than stale numbers
        return []


def format_gpus(readings: list[GpuReading]) -> str:
    """`GPU0 87% 12.3/79.6G · GPU1 0% 0.5/79.6G`; '' for no GPUs."""
    return " · ".join(f"GPU{r.index} {r.utilization}% {r.memory_used / GIB:.1f}/{r.memory_total / GIB:.1f}G"
                      for r in readings)


class GpuStatus(Static):
    """The GPUs' line; hidden, and never polled again, when there is nothing to read."""

    DEFAULT_CSS = """
    GpuStatus { height: 1; padding: 0 1; color: $text-muted; }
    """

    def on_mount(self) -> None:
        if not self.refresh_gpus():
            return
        self.set_interval(GPU_REFRESH_S, self.refresh_gpus)

    def refresh_gpus(self) -> bool:
        text = format_gpus(read_gpus())
        self.display = bool(text)
        self.update(text)
        return bool(text)
