"""One line under the header with each GPU's utilisation and memory, read through NVML.

The app owns one `GpuSampler`: NVML is opened once, read every `GPU_REFRESH_S` in one worker thread
(opening it can take a second without the driver's persistence mode: not on the UI thread), and
the line goes to the app's `gpu_line`; each screen's `GpuStatus` only shows that line. Without
`nvidia-ml-py` (the `gpu` extra, module `pynvml`), a driver or a GPU the sampler stops at once and
every `GpuStatus` stays hidden: no empty row. NVML is the driver's own counter for every process on
the device (the runs are other processes, so torch in this one could not see them), and it costs
no GPU memory.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from textual.message import Message
from textual.widgets import Static

from kdtui.tui.text import plain

GPU_REFRESH_S = 2.0
GIB = 2**30


@dataclass(frozen=True)
class GpuReading:
    index: int
    utilization: int        # percent of the last sample period the GPU was busy
    memory_used: int        # bytes
    memory_total: int       # bytes


@dataclass
class GpusRead(Message):
    """The sampler's latest readings ([] while a device does not answer)."""
    readings: list[GpuReading]


class GpuSampler:
    """NVML for the whole app: `run` opens it, publishes a reading every `GPU_REFRESH_S` until
    `stop` is set, then shuts it down. `available`: None until tried, then whether there is a GPU."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.available: bool | None = None
        self._nvml = None

    def run(self, publish: Callable[[list[GpuReading]], None]) -> None:
        self.available = self._open()
        if not self.available:
            return
        try:
            while not self.stop.is_set():
                publish(self.read())
                self.stop.wait(GPU_REFRESH_S)
        finally:
            self._nvml.nvmlShutdown()

    def _open(self) -> bool:
        try:
            import pynvml
        except ImportError:   # no `gpu` extra
            return False
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError:   # no driver library, no device
            return False
        self._nvml = pynvml
        try:
            if pynvml.nvmlDeviceGetCount() > 0:
                return True
        except pynvml.NVMLError:
            pass
        pynvml.nvmlShutdown()
        return False

    def read(self) -> list[GpuReading]:
        """Every GPU's reading now; [] when one stopped answering (nothing rather than stale numbers)."""
        nvml = self._nvml
        try:
            readings = []
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                utilization = nvml.nvmlDeviceGetUtilizationRates(handle)
                readings.append(GpuReading(index, int(utilization.gpu), int(memory.used), int(memory.total)))
            return readings
        except nvml.NVMLError:
            return []


def format_gpus(readings: list[GpuReading]) -> str:
    """`GPU0 87% 12.3/79.6G · GPU1 0% 0.5/79.6G`; '' for no GPUs."""
    return " · ".join(f"GPU{r.index} {r.utilization}% {r.memory_used / GIB:.1f}/{r.memory_total / GIB:.1f}G"
                      for r in readings)


class GpuStatus(Static):
    """The GPUs' line, as the app's sampler last read it; hidden while that is empty."""

    DEFAULT_CSS = """
    GpuStatus { height: 1; padding: 0 1; color: $text-muted; display: none; }
    """

    def on_mount(self) -> None:
        # The app's reactive, not a poll of our own: one NVML reader however many screens show it.
        self.watch(self.app, "gpu_line", self._show, init=True)

    def _show(self, text: str) -> None:
        self.update(plain(text))
        self.display = bool(text)
