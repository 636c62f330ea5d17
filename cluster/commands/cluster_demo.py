"""``make cluster-demo``: the farm on a two-node Ray cluster, submitted as the README documents.

Two Ray nodes start on this machine, each with its own temp directory: the head offers the custom
resource ``engine_node``, the second node ``learner_node``; ``configs/cluster-demo.yaml`` pins the
engine to one and the learner to the other. The run goes in with ``ray job submit
--working-dir .`` (so every node works from its own unpacked copy of the code), trains two
updates whose adapters have to travel from the learner's node to the engine's through Ray, and
writes its outputs to an absolute directory on the driver's node. Then both nodes are stopped
(only these two: other Ray clusters on the machine are left alone) and one JSON object is printed
last: ``nodes``, ``engine_node_id``, ``learner_node_id``, ``updates``, ``adapters_loaded``,
``ledger_balanced``, ``job_status``.

The nodes use Ray's token authentication with a token made for the demo (RAY_AUTH_TOKEN), as a
real multi-node cluster should.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "cluster-demo.yaml"
NODE_START_S = 120.0
JOB_TIMEOUT_S = 1200.0
AGENT_WAIT_S = 180.0
NO_AGENT = "No available agent to submit job"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("ray")), *args]


@contextmanager
def two_nodes(root: Path, env: dict):
    """A head node (engine_node) and a second node (learner_node); yields the dashboard URL and
    the GCS address. Each ``ray start --block`` owns its node: stopping it stops that node."""
    gcs, dashboard = _free_port(), _free_port()
    head = _start_node(root, "head", env, [
        "--head", "--port", str(gcs), "--num-cpus", "3", "--resources", '{"engine_node": 1}',
        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(dashboard),
    ])  # fmt: skip
    nodes = [head]
    try:
        _wait_for_nodes(f"127.0.0.1:{gcs}", 1, env)
        nodes.append(_start_node(root, "second", env, [
            "--address", f"127.0.0.1:{gcs}", "--num-cpus", "3",
            "--resources", '{"learner_node": 1}',
        ]))  # fmt: skip
        _wait_for_nodes(f"127.0.0.1:{gcs}", 2, env)
        yield f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{gcs}"
    finally:
        # SIGTERM to `ray start` itself, which drains its node and stops its own processes (a
        # signal to the whole group would kill the head's GCS first and stall the drain for 30 s);
        # whatever is left of the group afterwards is killed.
        for node in reversed(nodes):
            with suppress(ProcessLookupError):
                node.send_signal(signal.SIGTERM)
        for node in nodes:
            with suppress(subprocess.TimeoutExpired):
                node.wait(timeout=60)
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(node.pid, signal.SIGKILL)


def _start_node(root: Path, name: str, env: dict, args: list[str]) -> subprocess.Popen:
    log = (root / f"{name}.log").open("w")
    # Ray puts Unix sockets under its temp dir, and their paths must stay under 108 bytes; the
    # link in ``root`` shows where a node's own logs are.
    temp = tempfile.mkdtemp(prefix=f"rlf-{name}-")
    (root / f"{name}-ray").symlink_to(temp)
    # Two nodes (and maybe another Ray) share this host: each node's agents get free ports of
    # their own, or the second agent to start cannot bind Ray's defaults and jobs find no agent.
    ports = [f"--{name}={_free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
        "metrics-export-port",
    )]  # fmt: skip
    command = _ray("start", "--block", "--temp-dir", temp, "--disable-usage-stats", *ports, *args)
    return subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)


def _wait_for_nodes(address: str, count: int, env: dict) -> None:
    deadline = time.monotonic() + NODE_START_S
    while time.monotonic() < deadline:
        status = subprocess.run(_ray("status", "--address", address), env=env,
                                capture_output=True, text=True)  # fmt: skip
        if status.returncode == 0 and status.stdout.count(" node_") >= count:
            return
        time.sleep(2)
    raise TimeoutError(f"{count} Ray node(s) did not come up at {address} in {NODE_START_S:.0f}s")


def run_demo(root: Path) -> dict:
    """Start the cluster, submit the run, stop the cluster; return what the run reported."""
    out_dir = root / "runs"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    with two_nodes(root, env) as (dashboard, gcs):
        job = _submit(dashboard, out_dir, env)
        (root / "job.log").write_text(job.stdout + job.stderr)
        nodes = subprocess.run(_ray("list", "nodes", "--address", gcs, "--format", "json"),
                               env=env, capture_output=True, text=True)  # fmt: skip
    return report(out_dir / "cluster-demo", job.returncode, _alive_nodes(nodes.stdout), root)


def _submit(dashboard: str, out_dir: Path, env: dict) -> subprocess.CompletedProcess:
    """Submit the run and wait for it. The head's job agent registers a little after the node
    is up; until it has, the dashboard refuses submissions (and starts nothing), so retry."""
    # The entry point's python is this environment's: it is the one with rlfarm and Ray.
    command = _ray("job", "submit", "--address", dashboard, "--working-dir", str(REPO), "--",
                   sys.executable, "-m", "cluster.commands.train",
                   "--config", str(CONFIG.relative_to(REPO)),
                   "--set", f"run.out_dir={out_dir}")  # fmt: skip
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        job = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True,
                             timeout=JOB_TIMEOUT_S)  # fmt: skip
        if NO_AGENT not in job.stderr + job.stdout or time.monotonic() > deadline:
            return job
        time.sleep(3)


def _alive_nodes(listing: str) -> list[str]:
    try:
        return [n["node_id"] for n in json.loads(listing) if n.get("state") == "ALIVE"]
    except (json.JSONDecodeError, TypeError, KeyError):
        return []


def report(run_dir: Path, returncode: int, nodes: list[str], root: Path) -> dict:
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        return {"nodes": len(nodes), "job_status": "FAILED", "logs": str(root)}
    summary = json.loads(summary_path.read_text())
    placement = summary.get("placement", {})
    engines = placement.get("engines", [])
    return {
        "nodes": len(nodes),
        "node_ids": nodes,
        "engine_node_id": engines[0]["node_id"] if engines else None,
        "learner_node_id": placement.get("learner_node_id"),
        "updates": summary["updates"],
        "adapters_loaded": sum(e.get("adapters_loaded") or 0 for e in engines),
        "ledger_balanced": summary["ledger_balanced"],
        "ledger": summary["ledger"],
        "run_dir": summary.get("run_dir"),
        "logs": str(root),
        "job_status": "SUCCEEDED" if returncode == 0 else "FAILED",
    }


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="rlfarm-cluster-demo-"))
    print(f"two Ray nodes under {root}; submitting {CONFIG.name} ...", file=sys.stderr, flush=True)
    result = run_demo(root)
    print(json.dumps(result))
    different = result.get("engine_node_id") != result.get("learner_node_id")
    return 0 if result["job_status"] == "SUCCEEDED" and different else 1


if __name__ == "__main__":
    sys.exit(main())
