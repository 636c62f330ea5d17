"""A small verifiable environment beside the AWS one: spot, pick, copy, reverse or sort letters.

Tasks with an exact checker are the standard first check that a GRPO pipeline learns, and these
are cheap enough to train in minutes on 2 cores: one turn, a reply of a few tokens, no sandbox.
The AWS env stays the flagship; this one asks "does the farm, end to end, make a policy better on
inputs it never trained on?" (benchmarks/RESULTS.md, "The learning check", has what it answered).

A task is an operation on a letter string, ``<op>-<letters>`` (``reverse-cab``: the answer is
``b a c``; ``has-cab``: ``yes``, there is an a); its tier is the operation (has < first < last <
copy < reverse < sort). Letters are shown and answered space-separated so every letter is its own
token for any tokenizer. The reward is how much of the answer the reply has in order (``score``:
partial credit, extra or missing letters cost; exact match for one-word answers), so partial
answers are ranked and an untrained policy's groups still differ; success is the exact answer.

It is a plain Python env (``env.backend: python``, ``env.factory: env.letters:LettersEnv``) that
imports nothing of rlfarm, and it can demonstrate each task (``demonstration``), which the farm's
warm start uses to teach the answer format before GRPO.
"""

from __future__ import annotations

import difflib
import itertools
import random
from typing import ClassVar

ALPHABET = "abcdef"
LENGTHS = (3, 4)
# Easiest first (the tiers' order): spot a letter anywhere (a yes/no answer), pick one letter by
# position, then whole-string operations. Each maps the letters to the answer's words.
OPERATIONS = {
    "has": ("Is there an a", lambda s: ["yes" if "a" in s else "no"]),
    "first": ("Say the first letter", lambda s: [s[0]]),
    "last": ("Say the last letter", lambda s: [s[-1]]),
    "copy": ("Copy the letters", lambda s: list(s)),
    "reverse": ("Reverse the letters", lambda s: list(s[::-1])),
    "sort": ("Sort the letters", lambda s: sorted(s)),
}
SYSTEM_PROMPT = "Reply with the answer only: yes or no, or letters separated by spaces."


def _strings() -> list[str]:
    """Every string of distinct letters of the lengths above (480), in a seeded order. So many
    that a policy cannot memorise its training strings: it must learn the operation, which is
    what the held-out strings test."""
    every = [
        "".join(p) for n in LENGTHS for p in itertools.permutations(ALPHABET, n)
    ]  # fmt: skip
    return random.Random("letters").sample(every, len(every))


def _has_strings() -> list[str]:
    """The yes/no tier's strings, half with an a and half without (180 each). Over all strings
    five in eight have one, and a first trial's policy learned to answer "yes" to everything:
    held-out success rose 19 points while "no" questions fell to 0% (benchmarks/RESULTS.md). With
    the classes even, no constant answer beats 50% and only reading the letters pays."""
    strings = _strings()
    without = [s for s in strings if "a" not in s]
    with_a = [s for s in strings if "a" in s][: len(without)]
    return random.Random("has").sample(without + with_a, 2 * len(without))


def task_ids() -> dict[str, str]:
    """Every task id and its tier (the operation)."""
    return {
        f"{op}-{s}": op
        for op in OPERATIONS
        for s in (_has_strings() if op == "has" else _strings())
    }


def answer(task_id: str) -> str:
    """The exact answer of a task, space-separated."""
    op, _, letters = task_id.partition("-")
    if op not in OPERATIONS or not letters or set(letters) - set(ALPHABET):
        raise KeyError(f"unknown task {task_id!r}: use <op>-<letters>, op in {list(OPERATIONS)}")
    return " ".join(OPERATIONS[op][1](letters))


def score(reply: str, target: str) -> float:
    """How much of the answer the reply has, in order: 2 x (letters in their longest common
    order-preserving matching) / (letters in reply + letters in answer), difflib's ratio over
    the space-separated letters. 1 only for the exact answer; extra or missing letters cost.
    A one-word answer (a letter, yes or no) scores exact match only: partial credit there pays
    a reply that lists every letter (0.4 for four) more than a guess (1 in 3 or 4), and GRPO
    learned exactly that hedge (held-out reward up 5 points, success down 4, in a first trial)."""
    got, want = reply.split(), target.split()
    if len(want) == 1:
        return float(got == want)
    return difflib.SequenceMatcher(None, got, want, autojunk=False).ratio()


class LettersEnv:
    tasks: ClassVar[dict[str, str]] = task_ids()
    system_prompt = SYSTEM_PROMPT

    def reset(self, task_id: str, seed: int) -> str:
        self.target = answer(task_id)
        op, _, letters = task_id.partition("-")
        return f"{OPERATIONS[op][0]}: {' '.join(letters)}"

    def step(self, reply: str) -> dict:
        reward = score(reply, self.target)
        success = reply.split() == self.target.split()
        return {
            "text": "Correct." if success else f"The answer was: {self.target}",
            "reward": reward,
            "success": success,
            "done": True,
            "progress": reward,
            "action": reply.strip()[:40],
        }

    @staticmethod
    def demonstration(task_id: str, seed: int) -> str:
        """The reply that solves ``task_id`` (for SFT rows)."""
        return answer(task_id)
