"""Where the engines and the learner run: reserved together in Ray placement groups.

One placement group holds a bundle per engine and one for the learner, so Ray reserves them all
before any starts and keeps them where ``placement.strategy`` says (PACK: on as few nodes as
possible, which on one multi-GPU node means that node; SPREAD: across nodes). Extra custom
resources pin a part to the nodes that offer them (``placement.engine_resources`` /
``placement.learner_resources``, e.g. a node started with ``--resources '{"engine_node": 1}'``).

An engine with ``tensor_parallel_size`` > 1 gets a placement group of its own: one CPU bundle for
the engine actor and one GPU bundle per tensor-parallel worker on one node (STRICT_PACK), which
vLLM's Ray executor fills with its workers, as vLLM intends inside Ray. Rollout workers are not
reserved: they are light and go wherever Ray has room.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cluster.base.config import FarmConfig
from serving.devices import cluster_gpus, placement_device

PLACEMENT_TIMEOUT_S = 600.0  # a cluster short of resources must fail, not wait forever


class PlacementError(RuntimeError):
    """The cluster cannot hold the farm's engines and learner as configured."""


@dataclass
class FarmPlacement:
    engines: list[dict[str, Any]]  # Ray actor options per engine
    learner: dict[str, Any]  # Ray actor options of the learner
    groups: list[Any] = field(default_factory=list)  # the placement groups, to release

    @classmethod
    def reserve(cls, config: FarmConfig) -> FarmPlacement:
        """Reserve every engine's and the learner's resources (bounded wait)."""
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        engines, learner = farm_bundles(config)
        tp = config.engine.tensor_parallel_size
        strategy = config.placement.strategy
        if tp == 1:
            groups = [placement_group([*engines, learner], strategy=strategy)]
            slots = [(groups[0], i, False) for i in range(len(engines) + 1)]
        else:
            groups = [placement_group(bundles, strategy="STRICT_PACK") for bundles in engines]
            groups.append(placement_group([learner], strategy=strategy))
            slots = [(g, 0, True) for g in groups]
        try:
            ray.get([g.ready() for g in groups], timeout=PLACEMENT_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError as exc:
            for group in groups:
                ray.util.remove_placement_group(group)
            raise PlacementError(
                f"Ray could not reserve the farm's bundles within {PLACEMENT_TIMEOUT_S:.0f}s: "
                f"engines {engines}, learner {learner}, strategy {strategy}. The cluster has "
                f"{ray.cluster_resources()}; lower run.engines or the GPU shares, or add nodes"
            ) from exc

        def options(slot: tuple, resources: dict[str, Any]) -> dict[str, Any]:
            group, index, capture = slot
            strategy = PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=index,
                placement_group_capture_child_tasks=capture,
            )  # fmt: skip
            return {**resources, "scheduling_strategy": strategy}

        engine_options = [
            options(slots[i], _actor_resources(engines[i][0] if tp > 1 else engines[i]))
            for i in range(len(engines))
        ]
        return cls(engine_options, options(slots[-1], _actor_resources(learner)), groups)

    def release(self) -> None:
        import ray

        for group in self.groups:
            ray.util.remove_placement_group(group)


def learner_memory_fraction(config: FarmConfig, gpus_in_cluster: float | None = None) -> float:
    """The share of its GPU's memory the learner is given: all of it, unless engines may share
    its GPU (fractional GPU shares that fit beside the learner's), whose vLLM then takes
    ``gpu_memory_utilization`` each. Below 1, the engines start (and finish vLLM's memory
    profiling, which counts any memory another process allocates meanwhile as its own) before
    the learner allocates anything."""
    engine, run = config.engine, config.run
    gpus = cluster_gpus() if gpus_in_cluster is None else gpus_in_cluster
    shared = (
        placement_device(config.learner.device, gpus) == "cuda"
        and placement_device(engine.device, gpus) == "cuda"
        and engine.tensor_parallel_size == 1
        and engine.gpu_share + run.learner_gpu_share <= 1.0 + 1e-9
    )
    if not shared:
        return 1.0
    beside = min(run.engines, int((1.0 - run.learner_gpu_share) / engine.gpu_share + 1e-9))
    fraction = 1.0 - beside * engine.gpu_memory_utilization
    if fraction <= 0.05:
        raise ValueError(
            f"{beside} engine(s) of engine.gpu_memory_utilization="
            f"{engine.gpu_memory_utilization} may share the learner's GPU and leave it "
            f"{max(fraction, 0.0):.0%} of the memory: lower engine.gpu_memory_utilization, or "
            "raise engine.gpu_share / run.learner_gpu_share so fewer engines fit beside it"
        )
    return fraction


def farm_bundles(
    config: FarmConfig, gpus_in_cluster: float | None = None
) -> tuple[list, dict[str, float]]:
    """(a bundle per engine, or with tensor parallelism a list of bundles per engine; the
    learner's bundle). ``device: auto`` reserves GPUs when the cluster offers any (engines and
    learner each by their own ``device``); pure given ``gpus_in_cluster``, so configs can be
    checked without a cluster."""
    engine, place = config.engine, config.placement
    gpus = cluster_gpus() if gpus_in_cluster is None else gpus_in_cluster
    cuda = placement_device(engine.device, gpus) == "cuda"
    learner_cuda = placement_device(config.learner.device, gpus) == "cuda"
    if engine.tensor_parallel_size > 1:
        head = {"CPU": 1.0, **place.engine_resources}
        per_engine: Any = [head] + [{"GPU": 1.0}] * engine.tensor_parallel_size
    else:
        per_engine = {"CPU": 1.0, **({"GPU": engine.gpu_share} if cuda else {}),
                      **place.engine_resources}  # fmt: skip
    learner = {"CPU": 1.0, **({"GPU": config.run.learner_gpu_share} if learner_cuda else {}),
               **place.learner_resources}  # fmt: skip
    return [per_engine] * config.run.engines, learner


def _actor_resources(bundle: dict[str, float]) -> dict[str, Any]:
    """The actor options that use exactly a bundle (custom resources included)."""
    custom = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU")}
    options: dict[str, Any] = {"num_cpus": bundle.get("CPU", 0), "num_gpus": bundle.get("GPU", 0)}
    if custom:
        options["resources"] = custom
    return options
