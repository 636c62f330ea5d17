"""A second environment for the tests, different in kind from the AWS one: no tools, no command
to parse, no simulated cloud. The agent is asked to type a word back; each reply earns its
character similarity to the word (a continuous reward, so even an untrained model's groups
differ), and the episode ends on an exact copy or after ``MAX_TURNS`` replies. Tiers by length.

It imports nothing from rlfarm: it is what a user's env class looks like (``env.backend:
python``, ``env.factory: tests.envs.word_env:WordEnv``), and ``tests.envs.openenv_server`` serves
the same class over OpenEnv's wire format for the URL backend.
"""

from __future__ import annotations

import difflib
import random
from typing import ClassVar

WORDS = {
    "short": ["cat", "dog", "sun", "map", "key", "box"],
    "long": ["bucket", "stream", "window", "garden", "planet", "silver"],
}
MAX_TURNS = 2


class WordEnv:
    tasks: ClassVar = {f"type-{w}": tier for tier, words in WORDS.items() for w in words}
    system_prompt = "Type back exactly the word you are given, and nothing else."

    def reset(self, task_id: str, seed: int) -> str:
        if task_id not in self.tasks:
            raise KeyError(f"unknown task {task_id!r}")
        self.word = task_id.removeprefix("type-")
        self.turns = 0
        # The seed varies the wording, as a seeded initial state would.
        ask = random.Random(seed).choice(["Type the word", "Copy this word", "Repeat"])
        return f"{ask}: {self.word}"

    def step(self, reply: str) -> dict:
        self.turns += 1
        typed = reply.strip()
        similarity = difflib.SequenceMatcher(None, typed, self.word).ratio()
        success = typed == self.word
        return {
            "text": "Correct."
            if success
            else f"You typed {typed[:40]!r}; the word is {self.word}.",
            "reward": similarity,
            "success": success,
            "done": success or self.turns >= MAX_TURNS,
            "progress": similarity,
            "action": typed[:40],
        }
