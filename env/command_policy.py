"""The safety policy for agent commands: parse without a shell, then allow or refuse.

``check_command(text, cli)`` turns one command line into exactly one of:

- ``CliCommand``: argv for awscli's driver (``aws`` removed), safe to run in the sandbox;
- ``HelpRequest``: ``aws help --task-hint``, or a help page the env renders itself;
- ``Refusal``: a stable ``code`` and a message that says what was wrong and what is
  allowed. A refusal is an ordinary observation; the episode goes on.

Parsing follows POSIX shell quoting (single quotes, double quotes, backslashes, line
continuations) but nothing is ever executed by a shell: unquoted operators (``;``,
``|``, ``&``, ``<``, ``>``, parentheses, backticks), expansions (``$VAR``, ``$(...)``)
and comments are refused rather than passed on literally, because the agent meant
them as shell syntax and would misread the result.

What is refused, and why:

- anything but one ``aws <service> <operation> ...`` command;
- local files: ``file://``/``fileb://`` values, ``s3 cp/mv/sync`` to or from a local
  path, streaming-body parameters (``s3api put-object --body``) and operations that
  write the response to a local file (``s3api get-object``);
- options that would leave the sandbox or change who the caller is: ``--endpoint-url``,
  ``--profile``, ``--ca-bundle``, ``--no-verify-ssl``, ``--debug``, timeouts;
- ``aws configure``, ``aws history`` and CLI customizations that run other programs,
  wait, or never end (``ec2 wait``, ``ssm start-session``, ``logs start-live-tail``,
  ``cloudformation deploy``, ``emr ssh``, ...). Only the ``aws s3`` transfer commands
  and a few API-backed customizations are allowed.

The sandbox host adds a runtime guard behind this policy (``env.host_guard``): even a
command the policy let through cannot open host files, start processes or sockets.
"""

from __future__ import annotations

from dataclasses import dataclass

from env.cli_model import CliModel, Nargs, OperationSpec, OptionSpec
from env.types import MAX_COMMAND_CHARS

TASK_HINT_FLAG = "--task-hint"

# Global options that would reach outside the sandbox, change credentials or the
# process's logging, or override its fixed timeouts.
_FORBIDDEN_GLOBALS: dict[str, str] = {
    "--endpoint-url": "the sandbox endpoint is fixed; remove --endpoint-url",
    "--profile": "profiles are not available; the sandbox provides the credentials",
    "--ca-bundle": "TLS settings are fixed by the sandbox; remove --ca-bundle",
    "--no-verify-ssl": "TLS settings are fixed by the sandbox; remove --no-verify-ssl",
    "--debug": "debug logging is not available; remove --debug",
    "--v2-debug": "debug logging is not available; remove --v2-debug",
    "--cli-read-timeout": "timeouts are fixed by the sandbox; remove --cli-read-timeout",
    "--cli-connect-timeout": "timeouts are fixed by the sandbox; remove --cli-connect-timeout",
    "--cli-auto-prompt": "interactive prompts are not available; write the full command",
}
# AWS CLI v2 flags that mean "no pager": harmless here (there is no pager), so dropped.
_DROPPED_FLAGS = frozenset({"--no-cli-pager", "--no-cli-auto-prompt"})

# CLI customizations (not plain API calls) that are safe: they only call AWS APIs and
# print, once the local-path rules below hold.
ALLOWED_CUSTOMIZATIONS: frozenset[tuple[str, str]] = frozenset(
    {("s3", op) for op in ("ls", "mb", "rb", "rm", "cp", "mv", "sync", "presign", "website")}
    | {("ecr", "get-login-password"), ("rds", "generate-db-auth-token")}
)
_S3_TRANSFERS = frozenset({"cp", "mv", "sync"})

_SHELL_OPERATORS = set(";&|<>()`")


@dataclass(frozen=True)
class Refusal:
    """A command the sandbox will not run: a stable code and a message for the agent."""

    code: str
    message: str


@dataclass(frozen=True)
class HelpRequest:
    """``aws help --task-hint`` (task_hint) or a help page for a service/operation."""

    task_hint: bool = False
    service: str | None = None
    operation: str | None = None


@dataclass(frozen=True)
class CliCommand:
    """A command the policy allows: argv for awscli's driver, without the leading ``aws``."""

    argv: tuple[str, ...]
    service: str
    operation: str
    dropped_flags: tuple[str, ...] = ()


PolicyResult = CliCommand | HelpRequest | Refusal


# ---------------------------------------------------------------------------------
# Tokenizing (POSIX quoting, no expansion, shell syntax refused)


def tokenize(command: str) -> list[str] | Refusal:
    """Split a command line like a POSIX shell would, refusing any shell syntax."""
    tokens: list[str] = []
    current: list[str] = []
    in_word = False
    i, n = 0, len(command)
    while i < n:
        ch = command[i]
        if ch in " \t\r":
            if in_word:
                tokens.append("".join(current))
                current, in_word = [], False
            i += 1
        elif ch == "\n":
            return _refusal("multiple_lines")
        elif ch == "\\":
            if i + 1 < n and command[i + 1] == "\n":
                i += 2  # line continuation
                continue
            if i + 1 < n:
                current.append(command[i + 1])
            in_word = True
            i += 2
        elif ch == "'":
            end = command.find("'", i + 1)
            if end < 0:
                return _unbalanced("'")
            current.append(command[i + 1 : end])
            in_word = True
            i = end + 1
        elif ch == '"':
            part = _double_quoted(command, i + 1)
            if isinstance(part, Refusal):
                return part
            text, i = part
            current.append(text)
            in_word = True
        elif ch in _SHELL_OPERATORS:
            return _operator_refusal(ch)
        elif ch == "$" and i + 1 < n and (command[i + 1] in "({" or _is_name_start(command[i + 1])):
            return _expansion_refusal()
        elif ch == "#" and not in_word:
            return _refusal("comment")
        else:
            current.append(ch)
            in_word = True
            i += 1
    if in_word:
        tokens.append("".join(current))
    return tokens


def _double_quoted(command: str, start: int) -> tuple[str, int] | Refusal:
    out: list[str] = []
    i, n = start, len(command)
    while i < n:
        ch = command[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\" and i + 1 < n and command[i + 1] in '$`"\\\n':
            if command[i + 1] != "\n":
                out.append(command[i + 1])
            i += 2
            continue
        if ch == "`" or (
            ch == "$" and i + 1 < n and (command[i + 1] in "({" or _is_name_start(command[i + 1]))
        ):
            return _expansion_refusal()
        out.append(ch)
        i += 1
    return _unbalanced('"')


_FIXED_REFUSALS = {
    "multiple_lines": (
        "multiple_lines",
        "the command spans several lines; send exactly one aws command per step "
        "(end a line with a backslash to continue it)",
    ),
    "comment": (
        "shell_syntax",
        "comments ('#') are not supported: send only the aws command itself",
    ),
    "empty": ("empty", "empty command: send one aws command, e.g. 'aws s3 ls'"),
    "missing_service": (
        "missing_service",
        "missing service and operation: use 'aws <service> <operation> [options]'; "
        "'aws help' lists services",
    ),
    "configure": (
        "configure",
        "'aws configure' is not available: the sandbox provides credentials and region "
        "(pass --region to a command to use another region)",
    ),
    "history": ("customization", "'aws history' is not available in the sandbox"),
}


def _refusal(kind: str) -> Refusal:
    """A refusal whose wording never depends on the command."""
    return Refusal(*_FIXED_REFUSALS[kind])


def _operator_refusal(ch: str) -> Refusal:
    return Refusal(
        "shell_syntax",
        f"shell operator {ch!r} is not supported: commands run without a shell. "
        "Send exactly one aws command, with no pipes, redirects, chaining or "
        "subshells; quote the character if it is part of a value",
    )


def _is_name_start(ch: str) -> bool:
    return ch.isalpha() or ch == "_"


def _unbalanced(quote: str) -> Refusal:
    return Refusal("unbalanced_quotes", f"unbalanced {quote} quote: close every quote you open")


def _expansion_refusal() -> Refusal:
    return Refusal(
        "shell_syntax",
        "shell expansion ($VAR, $(...), backticks) is not supported: commands run without "
        "a shell. Write values literally, or put them in single quotes",
    )


# ---------------------------------------------------------------------------------
# The policy


def check_command(command: str, cli: CliModel) -> PolicyResult:
    """Decide what to do with one agent command line (see the module docstring)."""
    tokens = _aws_tokens(command)
    if isinstance(tokens, Refusal):
        return tokens
    args = tokens[1:]
    refusal = _check_values(args) or _check_globals(args)
    if refusal:
        return refusal
    dropped = tuple(a for a in args if a in _DROPPED_FLAGS)
    args = [a for a in args if a not in _DROPPED_FLAGS]
    words = _positionals(args, {}, cli.global_options)
    service = words[0][1] if words else None
    if service is None:
        if "--version" in args:
            return CliCommand(tuple(args), "", "", dropped)
        return _refusal("missing_service")
    if service == "help" or TASK_HINT_FLAG in args:
        return _help_request(args, words)
    return _refuse_service(service, cli) or _operation_call(args, words, service, cli, dropped)


def _aws_tokens(command: str) -> list[str] | Refusal:
    """The command's words, if it is one ``aws ...`` command line without shell syntax."""
    if len(command) > MAX_COMMAND_CHARS:
        return Refusal(
            "too_long", f"the command is longer than {MAX_COMMAND_CHARS} characters; shorten it"
        )
    tokens = tokenize(command.strip())
    if isinstance(tokens, Refusal):
        return tokens
    if not tokens:
        return _refusal("empty")
    if tokens[0] != "aws":
        return Refusal(
            "not_aws",
            f"only AWS CLI commands are allowed, got {tokens[0]!r}: start with "
            "'aws <service> <operation>' (e.g. 'aws s3api list-buckets')",
        )
    return tokens


def _refuse_service(service: str, cli: CliModel) -> Refusal | None:
    if service in ("configure", "history"):
        return _refusal(service)
    if not cli.has_service(service):
        return Refusal(
            "unknown_service",
            f"unknown service {service!r}; close matches: {cli.close_services(service)}. "
            "'aws help' lists services",
        )
    return None


def _operation_call(
    args: list[str], words: list[tuple[int, str]], service: str, cli: CliModel,
    dropped: tuple[str, ...],
) -> PolicyResult:  # fmt: skip
    """The operation of ``aws <service> <operation> ...``, checked against the CLI's model."""
    if len(words) < 2:
        return Refusal(
            "missing_operation",
            f"missing operation: use 'aws {service} <operation>'; "
            f"'aws {service} help' lists its operations",
        )
    operation = words[1][1]
    if operation == "help":
        return HelpRequest(service=service)
    spec = cli.operation(service, operation)
    if spec is None:
        return Refusal(
            "unknown_operation",
            f"'aws {service}' has no operation {operation!r}; close matches: "
            f"{cli.close_operations(service, operation)}. "
            f"'aws {service} help' lists its operations",
        )
    rest = args[words[1][0] + 1 :]
    operands = [word for _, word in _positionals(rest, spec.options, cli.global_options)]
    if "help" in operands:
        return HelpRequest(service=service, operation=operation)
    refusal = _check_operation(spec, rest, operands)
    if refusal:
        return refusal
    return CliCommand(tuple(args), service, operation, dropped)


def _help_request(args: list[str], words: list[tuple[int, str]]) -> PolicyResult:
    if TASK_HINT_FLAG in args:
        if [w for _, w in words] != ["help"] or args.count(TASK_HINT_FLAG) != 1:
            return Refusal(
                "bad_hint_request",
                "to get a hint for your task, send exactly 'aws help --task-hint'",
            )
        return HelpRequest(task_hint=True)
    return HelpRequest()


def _check_values(args: list[str]) -> Refusal | None:
    for arg in args:
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        lowered = value.lower()
        if lowered.startswith(("file://", "fileb://")):
            return Refusal(
                "local_file",
                f"{value.split('://')[0]}:// reads a local file, and the sandbox has no files. "
                "Pass the value inline instead (JSON in single quotes, e.g. "
                '--policy-document \'{"Version": "2012-10-17", ...}\')',
            )
    return None


def _check_globals(args: list[str]) -> Refusal | None:
    for arg in args:
        name = arg.split("=", 1)[0]
        if name in _FORBIDDEN_GLOBALS:
            return Refusal("forbidden_option", f"{name} is not allowed: {_FORBIDDEN_GLOBALS[name]}")
    return None


def _check_operation(spec: OperationSpec, rest: list[str], operands: list[str]) -> Refusal | None:
    where = f"'aws {spec.service} {spec.name}'"
    if spec.kind == "custom" and (spec.service, spec.name) not in ALLOWED_CUSTOMIZATIONS:
        if spec.name == "wait":
            return Refusal(
                "waiter",
                f"{where} blocks until a condition holds and is not available: poll with the "
                f"matching describe/get operation instead",
            )
        return Refusal(
            "customization",
            f"{where} is an AWS CLI customization that uses local files, other programs or "
            f"never ends, and is not available in the sandbox. Use the service's API "
            f"operations instead ('aws {spec.service} help' lists them)",
        )
    if spec.streaming_output:
        suggestion = (
            " To print an object, use 'aws s3 cp s3://BUCKET/KEY -'."
            if (spec.service, spec.name) == ("s3api", "get-object")
            else ""
        )
        return Refusal(
            "local_file",
            f"{where} writes its result to a local file, and the sandbox has no files.{suggestion}",
        )
    option = spec.streaming_input_option
    if option and any(a == option or a.startswith(option + "=") for a in rest):
        return Refusal(
            "local_file",
            f"{option} of {where} names a local file to upload, and the sandbox has no files. "
            f"Leave {option} out (the body is then empty)",
        )
    if spec.service == "s3" and spec.name in _S3_TRANSFERS:
        return _check_s3_transfer(spec, operands)
    return None


def _check_s3_transfer(spec: OperationSpec, operands: list[str]) -> Refusal | None:
    for position, path in enumerate(operands):
        to_stdout = spec.name == "cp" and position == 1 and path == "-"
        if not path.startswith("s3://") and not to_stdout:
            return Refusal(
                "local_file",
                f"'aws s3 {spec.name}' needs s3:// paths: {path!r} is a local path, and the "
                "sandbox has no files. Copy between s3:// locations, or print an object "
                "with 'aws s3 cp s3://BUCKET/KEY -'",
            )
    return None


def _positionals(
    args: list[str], options: dict[str, OptionSpec], global_options: dict[str, OptionSpec]
) -> list[tuple[int, str]]:
    """(index, token) of each token that is not an option or an option's value."""
    found: list[tuple[int, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and len(arg) > 2:
            name, has_inline_value = arg.split("=", 1)[0], "=" in arg
            spec = options.get(name) or global_options.get(name)
            i += 1
            if spec is not None and not has_inline_value:
                i = _skip_values(args, i, spec.nargs)
        else:
            found.append((i, arg))
            i += 1
    return found


def _skip_values(args: list[str], i: int, nargs: Nargs) -> int:
    def is_value(j: int) -> bool:
        return j < len(args) and not args[j].startswith("--")

    if nargs == 0:
        return i
    if nargs == "?":
        return i + 1 if is_value(i) else i
    if nargs in ("*", "+"):
        while is_value(i):
            i += 1
        return i
    assert isinstance(nargs, int)
    # A value may itself start with "--" only when the option takes exactly one value
    # and it is given separately; awscli accepts that, so do we.
    return min(len(args), i + nargs)
