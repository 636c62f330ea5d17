"""The safe command executor: policy check, then run in the episode's sandbox, with limits.

``CommandExecutor.execute(sandbox, command)`` never raises for anything the agent
can send. It returns an ``Execution``:

- a refusal by ``env.command_policy`` (what was wrong, what is allowed);
- a help page rendered by the env (``aws s3 help``); task hints are the episode's
  business (they cost reward), so a hint request comes back as ``kind="hint"``;
- or the result of running the command in-process through awscli against the
  episode's isolated moto world (``env.sandbox``), with a per-command time limit and
  capped output.

No shell is involved at any point: the command line is tokenized by the policy and
handed to awscli's driver as an argv list. The credentials, region, endpoint, HOME
and environment are the sandbox host's, never the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from env.cli_help import render_help
from env.command_policy import CliCommand, HelpRequest, Refusal, check_command
from env.sandbox import MotoHost, Sandbox, SetupError

ExecutionKind = Literal["ran", "refused", "help", "hint"]


@dataclass(frozen=True)
class Execution:
    """What happened to one agent command."""

    kind: ExecutionKind
    success: bool
    output: str = ""
    error: str = ""
    refusal_code: str | None = None
    service: str = ""
    operation: str = ""
    exit_code: int | None = None
    timed_out: bool = False
    duration_ms: float = 0.0

    @property
    def touched_world(self) -> bool:
        """Whether the command reached the sandbox (so state or audit log may have changed)."""
        return self.kind == "ran"


class CommandExecutor:
    """Checks and runs agent commands in sandboxes of one ``MotoHost``."""

    def __init__(
        self, host: MotoHost, *, timeout_s: float = 10.0, max_output_chars: int = 16384
    ) -> None:
        if timeout_s <= 0 or max_output_chars <= 0:
            raise ValueError("timeout_s and max_output_chars must be positive")
        self.host = host
        self.timeout_s = timeout_s
        self.max_output_chars = max_output_chars

    def execute(self, sandbox: Sandbox, command: str) -> Execution:
        decision = check_command(command, self.host.cli)
        if isinstance(decision, Refusal):
            return Execution(
                kind="refused", success=False, error=decision.message, refusal_code=decision.code
            )
        if isinstance(decision, HelpRequest):
            if decision.task_hint:
                return Execution(kind="hint", success=True)
            page = render_help(self.host.cli, decision.service, decision.operation)
            return Execution(kind="help", success=True, output=page)
        return self._run(sandbox, decision)

    def _run(self, sandbox: Sandbox, command: CliCommand) -> Execution:
        result = sandbox.run_cli(
            command.argv, timeout_s=self.timeout_s, max_output_chars=self.max_output_chars
        )
        return Execution(
            kind="ran",
            success=result.exit_code == 0 and not result.timed_out,
            output=result.stdout,
            error=result.stderr.strip(),
            service=command.service,
            operation=command.operation,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            duration_ms=result.duration_ms,
        )

    def setup_argv(self, command: str) -> Sequence[str]:
        """argv for a trusted setup command; it must pass the same policy as the agent's."""
        decision = check_command(command, self.host.cli)
        if not isinstance(decision, CliCommand):
            reason = decision.message if isinstance(decision, Refusal) else "it is a help request"
            raise SetupError(f"setup command {command!r} is not runnable: {reason}")
        return decision.argv
