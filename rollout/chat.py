"""A conversation kept as the exact token ids the engine saw, rendered with the model's template.

The first prompt is the chat template applied to [system, user] (or [user] alone). After each
sampled reply the next prompt-side tokens are the template's text for "end of that assistant turn
+ the new user turn + the generation prompt", obtained as the difference of two renderings — so the
sampled tokens are kept verbatim (never decoded and re-tokenised), and the prompt the engine sees
next is exactly what the same template would render for the whole conversation. That is the same
rendering SFT and eval use (``tokenizer.apply_chat_template``), which keeps all three in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class TemplateMismatchError(RuntimeError):
    """The chat template does not render a conversation as a prefix of its continuation."""


@dataclass
class Conversation:
    tokenizer: object
    messages: list[dict] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    # The last reply's text and whether the engine ended it with the end-of-turn token.
    _pending_reply: tuple[str, bool] = ("", False)

    @classmethod
    def start(cls, tokenizer, system: str | None, user: str) -> tuple[Conversation, list[int]]:
        """A new conversation and the prompt-side token ids of its first turn (no system turn
        when ``system`` is None)."""
        messages = [{"role": "user", "content": user}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        conv = cls(tokenizer=tokenizer, messages=messages)
        ids = conv._encode(conv._render(messages, generation_prompt=True))
        conv.token_ids = list(ids)
        return conv, ids

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def add_completion(self, completion_ids: list[int]) -> str:
        """Append sampled tokens verbatim; return the reply text (without the end token)."""
        self.token_ids += list(completion_ids)
        ended = bool(completion_ids) and completion_ids[-1] == self.tokenizer.eos_token_id
        content_ids = completion_ids[:-1] if ended else completion_ids
        reply = self.tokenizer.decode(content_ids, skip_special_tokens=False)
        self._pending_reply = (reply, ended)
        return reply

    def add_user(self, content: str) -> list[int]:
        """Append a user turn after the last reply; return its prompt-side token ids."""
        reply, ended = self._pending_reply
        before = self._render(self.messages, generation_prompt=True) + reply
        self.messages = [
            *self.messages,
            {"role": "assistant", "content": reply},
            {"role": "user", "content": content},
        ]
        after = self._render(self.messages, generation_prompt=True)
        if not after.startswith(before):
            raise TemplateMismatchError(
                "the chat template does not extend a conversation by appending to it; "
                "multi-turn token-exact rollouts need a prefix-stable template (e.g. ChatML)"
            )
        rest = after[len(before) :]
        eos_text = self.tokenizer.eos_token
        if ended and eos_text and rest.startswith(eos_text):
            rest = rest[len(eos_text) :]  # the engine already sampled the end-of-turn token
        ids = self._encode(rest)
        self.token_ids += ids
        return ids
