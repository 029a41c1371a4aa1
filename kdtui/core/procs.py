"""Whether a run's process is still alive, robust to zombies and reused pids."""
from __future__ import annotations

import os
from typing import Any


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def pid_alive(pid: Any, started: Any = None) -> bool:
    """Whether process `pid` is still running.

    A zombie (exited, not yet reaped) counts as dead. On Linux, if `started` (unix time the run's
    process was already running) is given and the process with that pid began well after it, the pid
    was reused by another process and the run's process is dead.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    fields = _proc_stat(pid)
    if fields is None:
        return True  # not Linux (or /proc hidden): the signal test is all we have
    if fields and fields[0] in ("Z", "X", "x"):
        return False
    if isinstance(started, (int, float)) and len(fields) > 19:
        boot = _boot_time()
        try:
            ticks = os.sysconf("SC_CLK_TCK")
            proc_start = boot + int(fields[19]) / ticks if boot is not None else None
        except (ValueError, OSError):
            proc_start = None
        # Generous slack: clock adjustments must never make a live run look dead.
        if proc_start is not None and proc_start > started + 120:
            return False
    return True


def make_ctrl_c_live() -> None:
    """Let SIGINT raise KeyboardInterrupt here even if this process was started with it ignored, as a
    script's `kdtui run SPEC &` is (a shell without job control does that). A run catches SIGINT while
    it trains whatever its start (a Ray cancel arrives that way too), so a foreground command must
    not drop it in the moments between the run's handlers."""
    import signal
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class DeferredInterrupt:
    """Ctrl-C inside this block is raised as KeyboardInterrupt at `check()` (and on leaving the
    block), never in the middle of a registry write or an import."""

    def __enter__(self) -> "DeferredInterrupt":
        import signal
        self.hit = False
        self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame) -> None:
        self.hit = True

    def check(self) -> None:
        if self.hit:
            self.hit = False
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        import signal
        signal.signal(signal.SIGINT, self._previous)
        if exc[0] is None:
            self.check()
