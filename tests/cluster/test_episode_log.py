"""The episode log: whole groups turn by turn, off the hot path, rotated, compressed and capped,
sampled by group, and readable while it is written."""

from __future__ import annotations

import gzip
import secrets

from cluster.farm.episode_log import EpisodeLog, read_episodes, read_segment, sampled
from cluster.farm.ledger import Ledger
from rollout.env_contract import StepResult
from rollout.types import Trajectory, TrajectoryGroup, Turn


def group(group_id: str, size: int = 2, text: str = "x") -> TrajectoryGroup:
    trajs = []
    for i in range(size):
        result = StepResult(text=f"env said {i}", reward=0.5, action=f"aws s3 ls {i}")
        turn = Turn([1, 2], [3, 4], [-0.1, -0.2], 5, f"reply {i} {text}", result)
        trajs.append(Trajectory("t1", "warmup", group_id, i, 7, turns=[turn], end="max_steps"))
    return TrajectoryGroup(group_id, "t1", "warmup", 7, trajs)


def test_booked_groups_are_written_whole_with_their_fate(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    log = EpisodeLog(tmp_path / "episodes")
    ledger.on_fate = log.add
    ledger.start("g1", "t1", "warmup", 2)
    ledger.record(group("g1"), "trained", "", step=3, staleness=1)
    ledger.start("g2", "t1", "warmup", 2)
    ledger.record(group("g2"), "dropped_zero_variance", "", step=3)
    ledger.start("g3", "t1", "warmup", 2)
    ledger.interrupt_open("stopped")  # never played to the end: no episodes to show
    log.close()
    episodes = list(read_episodes(tmp_path / "episodes"))
    assert [(e["group_id"], e["episode"], e["fate"]) for e in episodes] == [
        ("g1", 0, "trained"), ("g1", 1, "trained"),
        ("g2", 0, "dropped_zero_variance"), ("g2", 1, "dropped_zero_variance"),
    ]  # fmt: skip
    first = episodes[0]
    assert first["versions"] == [5] and first["staleness"] == 1 and first["seed"] == 7
    assert first["turns"][0]["reply"] == "reply 0 x"
    assert first["turns"][0]["action"] == "aws s3 ls 0"
    assert first["turns"][0]["observation"] == "env said 0"


def test_segments_rotate_compress_and_stay_under_the_cap(tmp_path):
    log = EpisodeLog(tmp_path / "episodes", max_mb=0.1, segment_mb=0.05)
    for i in range(12):  # ~40 kB a group, ~30 kB compressed
        log.add(group(f"g{i:02d}", text=secrets.token_urlsafe(15_000)), "trained")
    log.close()
    files = sorted(p.name for p in (tmp_path / "episodes").iterdir())
    assert any(f.endswith(".jsonl.gz") for f in files) and files[-1].endswith(".jsonl")
    total = sum(p.stat().st_size for p in (tmp_path / "episodes").iterdir())
    assert total < 0.1 * 2**20 + 0.1 * 2**20  # the cap, plus the open segment
    kept = [e["group_id"] for e in read_episodes(tmp_path / "episodes")]
    assert kept[-1] == "g11" and "g00" not in kept  # the oldest went first
    gz = next((tmp_path / "episodes").glob("*.gz"))
    assert gzip.decompress(gz.read_bytes()).count(b"\n") >= 2


def test_a_sample_keeps_whole_groups_stably_and_a_resume_opens_a_new_segment(tmp_path):
    keep = [g for g in (f"g{i}" for i in range(400)) if sampled(g, 0.25)]
    assert 60 < len(keep) < 140
    assert keep == [g for g in (f"g{i}" for i in range(400)) if sampled(g, 0.25)]
    log = EpisodeLog(tmp_path / "episodes", share=0.25)
    for i in range(40):
        log.add(group(f"g{i}"), "trained")
    log.close()
    logged = {e["group_id"] for e in read_episodes(tmp_path / "episodes")}
    assert logged == {f"g{i}" for i in range(40) if sampled(f"g{i}", 0.25)}
    again = EpisodeLog(tmp_path / "episodes")
    again.add(group("after"), "trained")
    again.close()
    assert sorted(p.name for p in (tmp_path / "episodes").iterdir()) == [
        "000001.jsonl", "000002.jsonl",
    ]  # fmt: skip


def test_a_line_being_written_is_skipped_not_an_error(tmp_path):
    directory = tmp_path / "episodes"
    directory.mkdir()
    (directory / "000001.jsonl").write_text('{"group_id": "a"}\n{"group_id": "b", "tu')
    assert [e["group_id"] for e in read_episodes(directory)] == ["a"]


def test_a_growing_segment_is_read_from_where_the_last_read_stopped(tmp_path):
    from cluster.view.run_data import RunData

    run = tmp_path / "run"
    (run / "episodes").mkdir(parents=True)
    (run / "ledger.jsonl").write_text("")
    segment = run / "episodes" / "000001.jsonl"
    segment.write_text('{"group_id": "a"}\n{"group_id": "b", "tu')
    records, offset = read_segment(segment)
    assert [r["group_id"] for r in records] == ["a"] and offset == len('{"group_id": "a"}\n')
    data = RunData.open(run)
    assert [e["group_id"] for e in data.episodes()] == ["a"]
    with segment.open("a") as f:
        f.write('rns": []}\n{"group_id": "c"}\n')
    assert [e["group_id"] for e in data.episodes()] == ["a", "b", "c"]
    assert data._segments["000001.jsonl"][0] == segment.stat().st_size
