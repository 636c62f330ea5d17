"""Progress for people: plain lines with ETA when output is a file, a bar on a terminal."""

from __future__ import annotations

import io

from cluster.base.progress import PhaseProgress, Progress, duration


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_every_tenth_with_elapsed_and_eta():
    out = io.StringIO()
    with Progress("warm start: SFT", 40, "steps", stream=out) as progress:
        for step in range(1, 41):
            progress.update_to(step, f"loss {1 / step:.3f}")
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # 4, 8, ..., 40
    assert lines[0].startswith("warm start: SFT: 4/40 steps (10%)") and "ETA" in lines[0]
    assert "loss 0.250" in lines[0]
    assert lines[-1].startswith("warm start: SFT: 40/40 steps (100%)") and "ETA" not in lines[-1]


def test_a_resumed_phase_counts_its_eta_from_where_it_restarted():
    progress = Progress("GRPO", 10, "updates", stream=io.StringIO(), initial=6, lines=False)
    assert progress.eta_s() is None
    progress.started -= 8.0  # two updates took 8 s
    progress.update_to(8)
    assert 7.9 < progress.eta_s() < 8.5  # two more to go at 4 s each
    assert progress.stream.getvalue() == ""  # lines=False: the caller prints its own


def test_a_terminal_gets_a_bar_and_lines_above_it():
    term = Terminal()
    with Progress("held-out eval of v3", 5, "episodes", stream=term) as progress:
        progress.write("[update 1/5] ...")
        progress.advance(2)
    shown = term.getvalue()
    assert "held-out eval of v3" in shown and "2/5" in shown and "[update 1/5] ..." in shown


def test_phase_progress_learns_its_total_from_the_first_report():
    phase = PhaseProgress("warm start: export", "tasks")
    with phase:
        for done in range(1, 6):
            phase.update(done, 5)
    assert phase._progress.total == 5 and phase._progress.n == 5
    assert duration(3725) == "1h02m" and duration(75) == "1m15s"
