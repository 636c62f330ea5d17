"""How full the engines are, from vLLM's own scheduler reports (``EngineHealth``), per window.

"Engine idle" only says whether an engine had a request in flight; an operator sizing env workers
needs to know how full its batches were. Each engine reports running totals (engine steps,
running sequences and KV-cache use summed per step, generated and prompt tokens) and its waiting
sequences now; a window's figures are differences of two reports. A restarted engine starts its
totals again: its first window counts from zero.
"""

from __future__ import annotations

from serving.types import EngineHealth

TOTALS = ("engine_steps", "running_sum", "kv_cache_usage_sum", "generated_tokens",
          "prompt_tokens", "prefilled_tokens")  # fmt: skip


class EngineUtilisation:
    def __init__(self) -> None:
        self._previous: dict[str, dict[str, float]] = {}  # engine id -> totals at the last window
        self._started = False

    def window(self, health: list[EngineHealth], elapsed_s: float) -> dict[str, float | None]:
        """Generated, prompt and prefilled tokens/s over all engines, the mean batch fill
        (running sequences per step over ``max_num_seqs``), the mean KV-cache use per step, and
        the sequences waiting now; None before a first window or with no engine step in it."""
        deltas = {name: 0.0 for name in TOTALS}
        fill_capacity = 0.0
        for report in health:
            if not report.alive:
                continue
            now = {name: float(getattr(report, name)) for name in TOTALS}
            before = self._previous.get(report.engine_id)
            if before is None or now["engine_steps"] < before["engine_steps"]:  # new or restarted
                before = {name: 0.0 for name in TOTALS} if self._started else now
            for name in TOTALS:
                deltas[name] += now[name] - before[name]
            fill_capacity += (now["engine_steps"] - before["engine_steps"]) * report.max_num_seqs
            self._previous[report.engine_id] = now
        first, self._started = not self._started, True
        steps = deltas["engine_steps"]
        if first or elapsed_s <= 0:
            return dict.fromkeys(
                ("engine_generated_tokens_per_s", "engine_prompt_tokens_per_s",
                 "engine_prefilled_tokens_per_s", "engine_batch_fill", "engine_kv_cache_usage",
                 "engine_waiting"),
            )  # fmt: skip
        return {
            "engine_generated_tokens_per_s": deltas["generated_tokens"] / elapsed_s,
            "engine_prompt_tokens_per_s": deltas["prompt_tokens"] / elapsed_s,
            "engine_prefilled_tokens_per_s": deltas["prefilled_tokens"] / elapsed_s,
            "engine_batch_fill": deltas["running_sum"] / fill_capacity if fill_capacity else None,
            "engine_kv_cache_usage": deltas["kv_cache_usage_sum"] / steps if steps else None,
            "engine_waiting": sum(r.waiting for r in health if r.alive),
        }
