"""Turn a model reply into one AWS CLI command.

Models wrap commands in code fences, prefix them with prose ("Sure! Run:"), or add a shell prompt.
We keep the first line that starts with ``aws `` after stripping those, and report whether the raw
reply already was a bare command (the format metric) and whether any command could be extracted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*$")
_PROMPT_PREFIX = re.compile(r"^(\$|>|#)\s+")
_INLINE_CODE = re.compile(r"`(aws [^`]+)`")
_INLINE_AWS = re.compile(r"(?:^|\s)(aws [^\n]+)")


@dataclass(frozen=True)
class ParsedReply:
    command: str | None
    bare: bool  # the raw reply, stripped, starts with "aws " and is one line

    @property
    def extracted(self) -> bool:
        return self.command is not None


def parse_reply(reply: str) -> ParsedReply:
    text = reply.strip()
    bare = text.startswith("aws ") and "\n" not in text
    for raw_line in text.splitlines():
        line = raw_line.strip().strip("`").strip()
        if _FENCE.match(raw_line.strip()):
            continue
        line = _PROMPT_PREFIX.sub("", line)
        if line.startswith("aws ") or line == "aws":
            return ParsedReply(command=line, bare=bare)
    # Prose with the command inline: prefer `aws ...` in backticks, else "... aws <rest of line>".
    for pattern in (_INLINE_CODE, _INLINE_AWS):
        match = pattern.search(text)
        if match:
            return ParsedReply(command=match.group(1).strip().rstrip("`").strip(), bare=bare)
    return ParsedReply(command=None, bare=bare)
