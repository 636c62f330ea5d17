"""`rlfarm scale` reaches a running farm's control actor from another process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from cluster.farm.control import control_name, start_control


def test_scale_command_changes_desired_workers_of_a_running_farm(ray_runtime):
    ray = ray_runtime
    control = start_control("scale-test", 2)
    ray.get(control.report.remote({"update": 3, "env_workers": 2}))
    address = ray.get_runtime_context().gcs_address
    done = subprocess.run(
        [sys.executable, "-m", "cluster.commands.cli", "scale", "--run", "scale-test",
         "--env-workers", "5", "--address", address],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "env workers -> 5" in done.stdout
    assert json.loads(done.stdout.split("\n", 1)[1])["update"] == 3  # the farm's status
    assert ray.get(control.desired_env_workers.remote()) == 5
    ray.kill(control)


def test_scale_names_a_missing_run_and_the_runs_that_exist(ray_runtime):
    address = ray_runtime.get_runtime_context().gcs_address
    control = start_control("listed-run", 2)
    ray_runtime.get(control.desired_env_workers.remote())
    done = subprocess.run(
        [sys.executable, "-m", "cluster.commands.cli", "scale", "--run", "nope",
         "--address", address],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    ray_runtime.kill(control)
    assert done.returncode == 2
    assert "no running farm named 'nope'" in done.stderr
    assert "running here: listed-run" in done.stderr and "--run NAME" in done.stderr
    assert "Traceback" not in done.stderr
    assert control_name("nope") == "rlfarm-control-nope"


def test_scale_without_a_cluster_says_so_and_how_to_point_at_one():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "cluster.commands.cli", "scale", "--env-workers", "3",
         "--address", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no farm is running there" in done.stderr and "--address" in done.stderr
    assert "Traceback" not in done.stderr
