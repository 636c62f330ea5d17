"""``rlfarm eval``: how well a policy does on held-out tasks, in two modes.

- ``dataset``: one greedy reply per held-out SFT row, scored against the row's reference command
  (``scoring.score_reply``); run by ``dataset.evaluate_rows``.
- ``live``: sampled (or greedy) episodes of the held-out views' tasks against real sandboxes
  (``live.evaluate_live``), the engine through the real rollout loop, an OpenAI-compatible
  endpoint through a message-level loop; per-task success feeds the paired comparisons
  (``stats``).

A policy is an engine pinned to one adapter version or an endpoint (``policies``); ``report``
writes results.json, report.md and bar charts; ``command`` runs ``rlfarm eval`` (registered in
``cluster.commands.cli``). The farm's own before/after evaluation uses the same live path and
metrics.
"""
