"""The periodic evaluation's record: is the policy learning, and does it carry to held-out tasks?

Every ``train.eval_every`` updates (and at the start and the end) the farm plays episodes of each
held-out view (``new_names``: renamed copies of the training tasks; ``new_tasks``: the held-out
task ids) and of a fixed set of training tasks, at ``run.eval_temperature``, and summarises them
by tier (``cluster.evaluation.scoring.live_summary``). Each evaluation is a row of ``eval.jsonl``;
``eval_curve.png`` plots completion rate and reward by tier over updates (new_names solid,
new_tasks dash-dot, training tasks dashed), so a trend (or its absence) is visible at a glance.
"""

from __future__ import annotations

import json
from pathlib import Path

SPLITS = {"new_names": "-", "new_tasks": "-.", "train": "--"}


class EvalCurve:
    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "eval.jsonl"
        self.png = run_dir / "eval_curve.png"

    def rows(self) -> list[dict]:
        """Every evaluation so far; after a resume the newest row of an update wins."""
        if not self.path.exists():
            return []
        latest: dict[int, dict] = {}
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            latest[row["update"]] = row
        return [latest[u] for u in sorted(latest)]

    def add(self, update: int, version: int, by_split: dict[str, dict]) -> None:
        row = {"update": update, "version": version, **by_split}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self.plot()

    def plot(self) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows()
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, metric, label in ((axes[0], "completion_rate", "success"),
                                  (axes[1], "reward", "mean episode return")):  # fmt: skip
            colors: dict[str, str] = {}
            for split, style in SPLITS.items():
                tiers = sorted({t for r in rows for t in (r.get(split) or {})})
                for tier in tiers:
                    points = [(r["update"], r[split][tier].get(metric)) for r in rows
                              if tier in (r.get(split) or {})]  # fmt: skip
                    points = [(u, v) for u, v in points if v is not None]
                    if not points:
                        continue
                    color = colors.setdefault(tier, f"C{len(colors)}")
                    ax.plot(*zip(*points, strict=True), style, marker="o", color=color,
                            label=f"{tier} ({split})")  # fmt: skip
            ax.set_xlabel("update")
            ax.set_title(label)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7, loc="best")
        fig.suptitle(
            "periodic eval by tier: new_names (solid), new_tasks (dash-dot), training (dashed)"
        )
        fig.tight_layout()
        fig.savefig(self.png, dpi=100)
        plt.close(fig)
        return self.png
