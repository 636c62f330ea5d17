"""The eval's outputs: ``results.json`` (every number), ``report.md`` (per-tier tables for each
target and a side-by-side headline table) and PNG bar charts of the headline metrics.

Input is ``{target name: {"describe": str, "dataset": summary | None, "live": summary | None}}``
with summaries as made by ``scoring.dataset_summary`` / ``scoring.live_summary``.
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
    ("episodes", "episodes", "int"), ("failed", "env failed", "int"),
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


def markdown(results: dict[str, dict], charts: dict[str, str]) -> str:
    out = ["# rlfarm eval", ""]
    out += [f"- **{name}**: {r['describe']}" for name, r in results.items()]
    for mode, columns, intro in (
        ("dataset", DATASET_COLUMNS, "One greedy reply per held-out SFT row (max 64 tokens)."),
        ("live", LIVE_COLUMNS, "Greedy episodes of held-out tasks against real sandboxes."),
    ):
        present = {n: r[mode] for n, r in results.items() if r.get(mode)}
        if not present:
            continue
        out += ["", f"## {mode.capitalize()} eval", "", intro, "", "### All tiers", ""]
        out += _table("target", {n: s[OVERALL] for n, s in present.items()}, columns)
        out += [""] + [f"![{key}]({file})" for key, file in charts.items() if key.startswith(mode)]
        for name, summary in present.items():
            out += ["", f"### {name} by tier", ""]
            out += _table("tier", summary, columns)
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


def charts(results: dict[str, dict], out_dir: Path) -> dict[str, str]:
    """Write the headline bar charts; returns {chart key: file name inside ``out_dir``}."""
    made: dict[str, str] = {}
    data = {n: r["dataset"][OVERALL] for n, r in results.items() if r.get("dataset")}
    if data:
        series = {n: [100 * (s[m] or 0.0) for m in DATASET_METRICS] for n, s in data.items()}
        _bars(out_dir / "dataset.png", ["fmt", "+xtr", "exact", "svc", "op"], series,
              "Dataset eval (all tiers)", "% of rows")  # fmt: skip
        made["dataset"] = "dataset.png"
    live = {n: r["live"] for n, r in results.items() if r.get("live")}
    if live:
        tiers = list(dict.fromkeys(t for s in live.values() for t in s))
        for key, title, scale, band in (
            ("completion_rate", "completion rate (%), 95% CI", 100.0, _wilson_band),
            ("reward", "mean episode reward, ± se", 1.0, _se_band),
        ):
            series = {
                n: [scale * ((s.get(t) or {}).get(key) or 0.0) for t in tiers]
                for n, s in live.items()
            }
            spans = {
                n: [tuple(scale * x for x in band(s.get(t) or {})) for t in tiers]
                for n, s in live.items()
            }
            name = f"live_{key}.png"
            _bars(out_dir / name, tiers, series, f"Live eval: {title}", title, spans)
            made[f"live_{key}"] = name
    return made


def write_report(results: dict[str, dict], out_dir: Path) -> Path:
    """Write results.json, the charts and report.md into ``out_dir``; returns report.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    made = charts(results, out_dir)
    report = out_dir / "report.md"
    report.write_text(markdown(results, made))
    return report
