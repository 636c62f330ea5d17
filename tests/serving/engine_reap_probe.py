"""``python -m tests.serving.engine_reap_probe``: a restarted actor ends its dead self's leftovers?

A Ray actor whose child process outlives it (Ray told not to clean children up, and the child in a
session of its own, as a process that escaped its actor's cleanup would be) is killed and
restarted by Ray, once as a plain actor and once doing what ``serving.engine.Engine`` does on
start (``reap_previous_incarnation``, then ``remember``). Prints JSON: for each, the dead
incarnation's child, whether it still ran after the restart, and what the restart reaped.
"""

from __future__ import annotations

import json
import os
import subprocess
import time


def main() -> None:
    import psutil
    import ray

    from serving.devices import ray_actor_id
    from serving.engine_processes import (
        alive,
        family,
        reap_previous_incarnation,
        remember,
    )

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _system_config={"kill_child_processes_on_worker_exit": False})  # fmt: skip

    @ray.remote(max_restarts=1, num_cpus=0)
    class Holder:
        def __init__(self, reaps: bool) -> None:
            self.reaped = reap_previous_incarnation(ray_actor_id()) if reaps else []
            self.child = subprocess.Popen(["sleep", "600"], start_new_session=True)
            if reaps:
                remember(ray_actor_id(), family())

        def state(self) -> dict:
            return {"pid": os.getpid(), "child": self.child.pid,
                    "child_started": psutil.Process(self.child.pid).create_time(),
                    "reaped": self.reaped}  # fmt: skip

    out = {}
    for reaps in (False, True):
        holder = Holder.remote(reaps)
        first = ray.get(holder.state.remote())
        ray.kill(holder, no_restart=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                second = ray.get(holder.state.remote(), timeout=10)
                if second["pid"] != first["pid"]:
                    break
            except Exception:
                time.sleep(0.2)
        old = [(first["child"], first["child_started"])]
        out["reaping" if reaps else "plain"] = {
            "old_child": first["child"],
            "old_child_running_after_restart": bool(alive(old)),
            "reaped": second["reaped"],
        }
        for pid in [first["child"], second["child"]]:
            if alive([(pid, psutil.Process(pid).create_time())] if psutil.pid_exists(pid) else []):
                os.kill(pid, 9)
        ray.kill(holder, no_restart=True)
    print(json.dumps(out))
    ray.shutdown()


if __name__ == "__main__":
    main()
