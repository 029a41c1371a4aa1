"""`kdtui queue`: the device slots (who holds each) and the runs waiting for one."""
from __future__ import annotations

import sys
from kdtui.cli.common import JsonOption, WorkspaceOption, fail, noun, open_store, plain_table, print_json
from kdtui.core.names import printable
from kdtui.core.ages import age_text


app = noun()


@app.command("queue")
def command(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """The device slots (who holds each) and the runs waiting for one, first in line first."""
    from kdtui.runs.executors.slots import QueueError, queue_state

    ws, store = open_store(workspace)
    try:
        payload = queue_state(ws, store)
    except QueueError as exc:
        raise fail(str(exc))
    per_gpu, gpus, slots, waiting = payload["slots_per_gpu"], payload["gpus"], payload["slots"], payload["waiting"]
    if as_json:
        print_json(payload)
        return
    where = f"GPUs {', '.join(gpus)}" if gpus else "no GPU: CPU slots"
    in_use = payload["slots_per_gpu_in_use"]
    count = f"{per_gpu} slot(s) per device" if in_use == per_gpu else \
        f"{in_use} slot(s) per device in use (settings: {per_gpu}; the workers were started with --slots-per-gpu)"
    lines = [printable(f"{count}; {where}"), ""]
    lines += plain_table([("slot", "<"), ("run", "<"), ("name", "<"), ("since", ">")],
                         [[slot["slot"], slot["run"] or "free", printable(slot["name"]),
                           age_text(slot["started"]) if slot["run"] else ""]
                          for slot in slots], squeeze=2).splitlines()
    lines += ["", f"waiting: {len(waiting)}"]
    if waiting:
        lines += plain_table([("#", ">"), ("run", "<"), ("name", "<"), ("waiting", ">")],
                             [[str(i + 1), t["run"], printable(t["name"]), age_text(t["enqueued"])]
                              for i, t in enumerate(waiting)], squeeze=2).splitlines()
    sys.stdout.write("\n".join(lines) + "\n")
