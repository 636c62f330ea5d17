"""``python -m tests.cluster.gpu_layout_probe SPEC``: the farm's GPU layout on logical GPUs.

Ray hands out GPUs it was told exist (``num_gpus``) whether or not the box has any, and sets
``CUDA_VISIBLE_DEVICES`` in each actor to the ids it assigned: exactly what a GPU node does. This
reserves a farm's placement (``cluster.base.placement``) on such a cluster, one or two nodes, and
starts a stand-in actor with each engine's and the learner's options; for a tensor-parallel
engine the stand-in starts one task per worker bundle of its placement group, the way vLLM's Ray
executor places its workers. Each reports what it sees; the JSON goes to stdout. SPEC (JSON):
``{"config": path, "overrides": [...], "nodes": [gpus per node, ...]}``.
"""

from __future__ import annotations

import json
import os
import sys


def _seen() -> dict:
    import ray

    return {
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "ray_ids": [str(i) for i in ray.get_gpu_ids()],
        "node": ray.get_runtime_context().get_node_id(),
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from cluster.base.config import load_config
    from cluster.base.placement import FarmPlacement
    from serving.devices import actor_device, expose_devices_for_workers

    cluster = Cluster()
    for gpus in spec["nodes"]:
        cluster.add_node(num_cpus=8, num_gpus=gpus)
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    config = load_config(spec["config"], spec["overrides"])
    tp = config.engine.tensor_parallel_size

    @ray.remote
    def worker() -> dict:
        return _seen()

    @ray.remote
    class Part:
        def report(self, device: str, tp: int) -> dict:
            seen = {**_seen(), "device": actor_device(device, tp)}
            if tp > 1:
                expose_devices_for_workers()
                seen["visible_to_vllm"] = os.environ.get("CUDA_VISIBLE_DEVICES")
                group = ray.util.get_current_placement_group()
                seen["workers"] = ray.get([
                    worker.options(num_cpus=0, num_gpus=1, scheduling_strategy=(
                        PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i + 1)
                    )).remote()
                    for i in range(tp)
                ])  # fmt: skip
            return seen

    placement = FarmPlacement.reserve(config)
    engines = [
        Part.options(**options).remote().report.remote(config.engine.device, tp)
        for options in placement.engines
    ]
    learner = Part.options(**placement.learner).remote().report.remote(config.learner.device, 1)
    out = {"engines": ray.get(engines), "learner": ray.get(learner)}
    print(json.dumps(out))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
