"""The letters env (env/letters.py): tasks, exact answers, the partial-credit reward, and the
demonstrations the warm start trains on, through the farm's own Python-env plumbing."""

from __future__ import annotations

import pytest

from env.letters import ALPHABET, OPERATIONS, LettersEnv, answer, score
from rollout.config import EnvSettings
from rollout.env_backends import env_tasks
from rollout.python_backend import can_demonstrate, demonstration_rows

SETTINGS = EnvSettings(backend="python", factory="env.letters:LettersEnv")


def test_every_task_is_an_operation_on_distinct_letters_with_one_tier_per_operation():
    tasks = env_tasks(SETTINGS)
    # 480 strings per operation; the yes/no tier keeps as many without an a as with one (180 each)
    assert len(tasks) == len(LettersEnv.tasks) == 360 + (len(OPERATIONS) - 1) * 480
    assert list(dict.fromkeys(t.tier for t in tasks)) == list(OPERATIONS)  # easiest first
    for task in tasks[:50] + tasks[-50:]:
        op, _, letters = task.id.partition("-")
        assert op == task.tier and len(set(letters)) == len(letters) in (3, 4)
        assert set(letters) <= set(ALPHABET)


def test_no_constant_answer_beats_half_of_the_yes_no_tier():
    answers = [answer(t.id) for t in env_tasks(SETTINGS) if t.tier == "has"]
    assert answers.count("yes") == answers.count("no") == 180


def test_answers_are_the_operation_applied_space_separated():
    assert answer("has-cab") == "yes" and answer("has-cdb") == "no"
    assert answer("first-cab") == "c" and answer("last-cab") == "b"
    assert answer("copy-cab") == "c a b" and answer("reverse-cab") == "b a c"
    assert answer("sort-dcab") == "a b c d"
    with pytest.raises(KeyError, match="unknown task"):
        answer("shout-cab")
    with pytest.raises(KeyError, match="unknown task"):
        answer("copy-xyz")


def test_score_ranks_partial_answers_and_pays_no_hedge_on_one_letter():
    assert score("a b c d", "a b c d") == 1.0
    assert score("a b c", "a b c d") == pytest.approx(6 / 7)  # one letter missing
    assert score("a b c d e", "a b c d") == pytest.approx(8 / 9)  # one letter extra
    assert score("d c b a", "a b c d") == pytest.approx(2 / 8)  # right letters, wrong order
    assert score("", "a b") == 0.0
    # One-letter answers: only the exact letter scores; listing every letter earns nothing.
    assert score("c", "c") == 1.0 and score("c a b", "c") == 0.0 and score("a", "c") == 0.0
    assert score("yes", "yes") == 1.0 and score("yes no", "yes") == 0.0


def test_an_episode_is_one_turn_rewarded_by_score_and_success_only_when_exact():
    env = LettersEnv()
    assert env.reset("reverse-cab", seed=0) == "Reverse the letters: c a b"
    result = env.step("  b a c \n")
    assert result["success"] and result["done"] and result["reward"] == 1.0
    env.reset("reverse-cab", seed=0)
    partial = env.step("b a")
    assert not partial["success"] and 0 < partial["reward"] < 1
    assert partial["text"] == "The answer was: b a c"


def test_demonstrations_are_the_conversation_the_rollout_opens_with_the_exact_answer():
    assert can_demonstrate(SETTINGS)
    rows = demonstration_rows(SETTINGS, ["sort-dcab", "last-fea"], seeds=[0, 1])
    assert len(rows) == 4
    first = rows[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user", "assistant"]
    assert first[0]["content"] == LettersEnv.system_prompt
    assert first[1]["content"] == "Sort the letters: d c a b"
    assert first[2]["content"] == "a b c d"
    assert rows[2]["messages"][2]["content"] == "a" and rows[2]["task_id"] == "last-fea"
