"""The eval's outputs: ``results.json`` (every number), ``report.md`` (side-by-side headline
tables, the paired comparisons, per-task success and per-tier tables for each target) and PNG bar
charts of the headline metrics.

Input: ``{"eval": what the live eval played (``command.describe_views``) or None, "targets":
{name: {"describe": str, "dataset": summary | None, "live": {view: live_result} | None}},
"comparisons": [paired differences]}``, with summaries as made by ``scoring.dataset_summary`` /
``scoring.live_result`` and comparisons by ``command.compare_pairs``.
"""

from __future__ import annotations

import json
from pathlib import Path

from cluster.evaluation.scoring import DATASET_METRICS, OVERALL

DATASET_COLUMNS = (
    ("n", "n", "int"), ("errors", "errs", "int"), ("fmt", "fmt%", "pct"), ("xtr", "+xtr%", "pct"),
    ("exact", "exact%", "pct"), ("svc", "svc%", "pct"), ("op", "op%", "pct"),
    ("latency_s", "lat (s)", "sec"), ("reply_chars", "len", "num"),
)  # fmt: skip
LIVE_COLUMNS = (
    ("tasks", "tasks", "int"), ("episodes", "episodes", "int"), ("failed", "env failed", "int"),
    ("reward", "mean reward", "num"), ("reward_se", "± se", "num"),
    ("completion_rate", "completion%", "pct"), ("completion_ci95", "95% CI", "ci"),
    ("steps_to_complete", "steps to complete", "num"), ("max_progress", "max progress", "num"),
    ("hint_rate", "hint use%", "pct"), ("format_failure_rate", "format fail%", "pct"),
)  # fmt: skip


def _cell(value, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "pct":
        return f"{100 * value:.0f}%"
    if kind == "ci":
        low, high = value
        return f"{100 * low:.0f}-{100 * high:.0f}%"
    if kind == "int":
        return str(int(value))
    if kind == "sec":
        return f"{value:.3f}"
    return f"{value:.2f}"


def _table(first: str, rows: dict[str, dict], columns) -> list[str]:
    lines = [
        "| " + " | ".join([first, *(title for _, title, _ in columns)]) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for label, metrics in rows.items():
        cells = [_cell(metrics.get(key), kind) for key, _, kind in columns]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return lines


def _draw(spec: dict | None) -> str:
    if not spec:
        return ""
    t = spec["temperature"]
    how = "greedy" if t == 0 else f"sampled at temperature {t:g}"
    return f"{spec['episodes_per_task']} episode(s) per task, {how}, against real sandboxes."


def _comparisons(comparisons: list[dict]) -> list[str]:
    lines = [
        "## Paired comparisons (by task)", "",
        "Each task counts once: the difference is the mean over tasks of (success of B - success "
        "of A); 95% interval by bootstrap over tasks, p-value by a two-sided sign-flip test.", "",
        "| view | A | B | tasks | A success | B success | B - A | 95% CI | p "
        "| tasks B better / worse |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for c in comparisons:
        low, high = c["ci95"]
        lines.append(
            f"| {c['view']} | {c['a']} | {c['b']} | {c['strata']} | {100 * c['rate_a']:.1f}% | "
            f"{100 * c['rate_b']:.1f}% | {100 * c['difference']:+.1f} | "
            f"{100 * low:+.1f} to {100 * high:+.1f} | {c['p_value']:.3g} | "
            f"{c['b_better']} / {c['a_better']} |"
        )
    return lines


def _per_task(view: str, live: dict[str, dict]) -> list[str]:
    names = list(live)
    tasks = list(dict.fromkeys(t for r in live.values() for t in r["by_task"]))
    lines = [
        f"### {view}: success per task", "",
        "| task | tier | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names),
    ]  # fmt: skip
    for task in tasks:
        cells = []
        for name in names:
            row = live[name]["by_task"].get(task)
            if row is None or not row["episodes"]:
                cells.append("–")
                continue
            low, high = row["ci95"]
            cells.append(
                f"{row['successes']}/{row['episodes']} ({100 * low:.0f}-{100 * high:.0f}%)"
            )
        tier = next(r["by_task"][task]["tier"] for r in live.values() if task in r["by_task"])
        lines.append(f"| {task} | {tier} | " + " | ".join(cells) + " |")
    return lines


def _unseen(spec: dict | None) -> list[str]:
    views = (spec or {}).get("views", {})
    unseen = {t: ops for v in views.values() for t, ops in v.get("unseen_operations", {}).items()}
    if not unseen:
        return []
    lines = [
        "", "Operations each new_tasks task needs that no training task's solution uses "
        "(an outcome reward cannot teach them):", "",
    ]  # fmt: skip
    lines += [f"- `{t}`: {', '.join(ops) if ops else '(none: every operation was trained)'}"
              for t, ops in unseen.items()]  # fmt: skip
    return lines


def markdown(results: dict, charts: dict[str, str]) -> str:
    targets, spec = results["targets"], results.get("eval")
    out = ["# rlfarm eval", ""]
    out += [f"- **{name}**: {r['describe']}" for name, r in targets.items()]
    data = {n: r["dataset"] for n, r in targets.items() if r.get("dataset")}
    if data:
        out += ["", "## Dataset eval", "", "One greedy reply per held-out SFT row (max 64 tokens).",
                "", "### All tiers", ""]  # fmt: skip
        out += _table("target", {n: s[OVERALL] for n, s in data.items()}, DATASET_COLUMNS)
        out += [""] + [f"![{k}]({f})" for k, f in charts.items() if k.startswith("dataset")]
        for name, summary in data.items():
            out += ["", f"### {name} by tier", "", *_table("tier", summary, DATASET_COLUMNS)]
    live = {n: r["live"] for n, r in targets.items() if r.get("live")}
    views = list(dict.fromkeys(v for r in live.values() for v in r))
    if views:
        out += ["", "## Live eval", "", _draw(spec)]
        out += _unseen(spec)
    if results.get("comparisons"):
        out += ["", *_comparisons(results["comparisons"])]
    for view in views:
        in_view = {n: r[view] for n, r in live.items() if view in r}
        out += ["", f"## Live eval: {view}", "", "### All tiers", ""]
        out += _table("target", {n: r["by_tier"][OVERALL] for n, r in in_view.items()},
                      LIVE_COLUMNS)  # fmt: skip
        out += [""] + [f"![{k}]({f})" for k, f in charts.items() if k.startswith(f"live_{view}")]
        for name, r in in_view.items():
            by_tier = _table("tier", r["by_tier"], LIVE_COLUMNS)
            out += ["", f"### {view}: {name} by tier", "", *by_tier]
        out += ["", *_per_task(view, in_view)]
    return "\n".join(out) + "\n"


def _bars(
    path: Path, groups: list[str], series: dict[str, list[float]], title: str, ylabel: str,
    spans: dict[str, list[tuple[float, float]]] | None = None,
) -> None:  # fmt: skip
    """Grouped bars; ``spans``: each bar's (low, high) noise band, drawn as an error bar."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(groups) * max(1, len(series))), 3.6))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        yerr = None
        if spans and name in spans:
            low, high = zip(*spans[name], strict=True)
            yerr = [[v - lo for v, lo in zip(values, low, strict=True)],
                    [hi - v for v, hi in zip(values, high, strict=True)]]  # fmt: skip
        ax.bar(xs, values, width=width, label=name, yerr=yerr, capsize=3)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _wilson_band(summary: dict) -> tuple[float, float]:
    rate = summary.get("completion_rate") or 0.0
    low, high = summary.get("completion_ci95") or (rate, rate)
    return low, high


def _se_band(summary: dict) -> tuple[float, float]:
    reward, se = summary.get("reward") or 0.0, summary.get("reward_se") or 0.0
    return reward - se, reward + se


def charts(results: dict, out_dir: Path) -> dict[str, str]:
    """Write the headline bar charts; returns {chart key: file name inside ``out_dir``}."""
    made: dict[str, str] = {}
    targets = results["targets"]
    data = {n: r["dataset"][OVERALL] for n, r in targets.items() if r.get("dataset")}
    if data:
        series = {n: [100 * (s[m] or 0.0) for m in DATASET_METRICS] for n, s in data.items()}
        _bars(out_dir / "dataset.png", ["fmt", "+xtr", "exact", "svc", "op"], series,
              "Dataset eval (all tiers)", "% of rows")  # fmt: skip
        made["dataset"] = "dataset.png"
    live = {n: r["live"] for n, r in targets.items() if r.get("live")}
    for view in dict.fromkeys(v for r in live.values() for v in r):
        by_tier = {n: r[view]["by_tier"] for n, r in live.items() if view in r}
        tiers = list(dict.fromkeys(t for s in by_tier.values() for t in s))
        for key, title, scale, band in (
            ("completion_rate", "success (%), 95% CI", 100.0, _wilson_band),
            ("reward", "mean episode reward, ± se", 1.0, _se_band),
        ):
            series = {
                n: [scale * ((s.get(t) or {}).get(key) or 0.0) for t in tiers]
                for n, s in by_tier.items()
            }
            spans = {
                n: [tuple(scale * x for x in band(s.get(t) or {})) for t in tiers]
                for n, s in by_tier.items()
            }
            name = f"live_{view}_{key}.png"
            _bars(out_dir / name, tiers, series, f"Live eval, {view}: {title}", title, spans)
            made[f"live_{view}_{key}"] = name
    return made


def write_report(results: dict, out_dir: Path) -> Path:
    """Write results.json, the charts and report.md into ``out_dir``; returns report.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    made = charts(results, out_dir)
    report = out_dir / "report.md"
    report.write_text(markdown(results, made))
    return report
