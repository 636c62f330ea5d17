"""Multi-node without a shared run directory: ``make cluster-demo``'s own code starts two Ray
nodes on this machine (own temp dirs, custom resources), submits the farm with ``ray job
submit --working-dir``, and the run completes with the engine and the learner on different
nodes, its adapters loaded across them through Ray, and a balanced ledger."""

from __future__ import annotations

import pytest

from cluster.commands.cluster_demo import run_demo

pytestmark = pytest.mark.vllm


def test_two_node_job_trains_with_engine_and_learner_on_different_nodes(tmp_path):
    result = run_demo(tmp_path)
    assert result["job_status"] == "SUCCEEDED", (tmp_path / "job.log").read_text()[-3000:]
    assert result["nodes"] == 2
    assert result["engine_node_id"] in result["node_ids"]
    assert result["learner_node_id"] in result["node_ids"]
    assert result["engine_node_id"] != result["learner_node_id"]
    assert result["updates"] == 2 and result["adapters_loaded"] == 2
    assert result["ledger_balanced"]
    # The outputs are where the config said, on the driver's node, not in Ray's job copy.
    assert result["run_dir"] == str(tmp_path / "runs" / "cluster-demo")
    assert (tmp_path / "runs" / "cluster-demo" / "adapters" / "v000002").is_dir()
