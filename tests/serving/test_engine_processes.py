"""A restarted engine actor ends what its dead incarnation left running, and nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from serving.engine_processes import alive, family, reap

REPO = Path(__file__).resolve().parents[2]


def test_a_restarted_actor_ends_its_dead_incarnations_leftover_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.serving.engine_reap_probe"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # the hazard is real: a plain actor's escaped child outlives its restart
    assert seen["plain"]["old_child_running_after_restart"] is True
    # the engine's way: the restart killed it, and waited until it was gone, before going on
    assert seen["reaping"]["reaped"] == [seen["reaping"]["old_child"]]
    assert seen["reaping"]["old_child_running_after_restart"] is False


def test_a_family_is_found_and_reaped_but_a_reused_pid_is_left_alone() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, time; subprocess.Popen(['sleep', '600']); time.sleep(600)"],
    )  # fmt: skip
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        for _ in range(100):  # until the grandchild exists
            members = family(parent.pid)
            if len(members) == 2:
                break
            subprocess.run(["sleep", "0.05"])
        assert len(members) == 2 and members[0][0] == parent.pid
        # a record whose pid now belongs to another process (start time differs): not ours
        stale = [(bystander.pid, family(bystander.pid)[0][1] - 100.0)]
        assert alive(stale) == [] and reap(stale) == []
        assert bystander.poll() is None
        assert sorted(reap(members)) == sorted(pid for pid, _ in members)
        assert alive(members) == []
    finally:
        bystander.kill()
        parent.kill()
        parent.wait()
        bystander.wait()
