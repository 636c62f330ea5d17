"""What the installed AWS CLI knows: its services, operations and their arguments.

The command policy (``env.command_policy``) needs to know, for a command line, which
tokens are option values and which are positional, whether an operation is a plain
API call or a CLI customization (``s3 cp``, ``ec2 wait``, ``ssm start-session``), and
whether it streams a body from or to a local file. Rather than keeping hand-written
tables that drift from the CLI, this module reads awscli's own command and argument
tables from a driver (built lazily per service, as awscli itself does) and reduces
them to the small frozen specs below. ``env.cli_help`` renders help from the same
specs, so help never starts awscli's man-page renderer or pager.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Literal

Nargs = int | Literal["?", "*", "+"]
OperationKind = Literal["api", "custom"]


@dataclass(frozen=True)
class OptionSpec:
    """One ``--option`` (or positional argument) and how many values it takes."""

    name: str  # "--bucket", or the positional's name ("paths")
    nargs: Nargs  # 0 for flags, 1 for a single value, "?"/"*"/"+" or a count
    required: bool = False
    type_name: str = "string"
    positional: bool = False


@dataclass(frozen=True)
class OperationSpec:
    """One ``aws <service> <operation>`` as the CLI defines it."""

    service: str
    name: str
    kind: OperationKind
    options: dict[str, OptionSpec] = field(default_factory=dict)
    positionals: tuple[OptionSpec, ...] = ()
    streaming_input_option: str | None = None  # e.g. "--body": awscli opens it as a file
    streaming_output: bool = False  # writes the response body to a local file (outfile)


class CliModel:
    """Service/operation/argument lookups over a live awscli ``CLIDriver``.

    Lookups build awscli's tables on first use of a service (a few ms) and cache the
    reduced specs; the driver is the same one that later runs the command.
    """

    def __init__(self, driver: Any) -> None:
        self._driver = driver
        self._commands = driver._get_command_table()
        self.global_options: dict[str, OptionSpec] = {
            spec.name: spec
            for spec in (_option_spec(arg) for arg in driver._get_argument_table().values())
        }
        self._operations: dict[str, dict[str, Any]] = {}
        self._specs: dict[tuple[str, str], OperationSpec] = {}

    @property
    def services(self) -> list[str]:
        """CLI service names (``s3api``, ``s3``, ``ec2``, ...), sorted."""
        return sorted(self._commands)

    def has_service(self, service: str) -> bool:
        return service in self._commands

    def close_services(self, service: str) -> list[str]:
        return difflib.get_close_matches(service, self._commands, n=3)

    def operations(self, service: str) -> list[str]:
        """Operation names of a service, sorted; empty for an unknown service."""
        return sorted(self._operation_table(service))

    def close_operations(self, service: str, operation: str) -> list[str]:
        return difflib.get_close_matches(operation, self._operation_table(service), n=3)

    def operation(self, service: str, operation: str) -> OperationSpec | None:
        """The spec of ``aws service operation``, or None when the CLI has no such command."""
        key = (service, operation)
        if key not in self._specs:
            command = self._operation_table(service).get(operation)
            if command is None:
                return None
            self._specs[key] = _operation_spec(service, operation, command)
        return self._specs[key]

    def _operation_table(self, service: str) -> dict[str, Any]:
        if service not in self._operations:
            command = self._commands.get(service)
            if command is None:
                table: dict[str, Any] = {}
            elif hasattr(command, "subcommand_table"):  # `aws s3` and other custom groups
                table = dict(command.subcommand_table)
            elif hasattr(command, "_get_command_table"):
                table = dict(command._get_command_table())
            else:
                table = {}
            self._operations[service] = table
        return self._operations[service]


def _option_spec(arg: Any) -> OptionSpec:
    action = getattr(arg, "_action", None)
    nargs = getattr(arg, "nargs", None)
    if action in ("store_true", "store_false", "version") or (
        arg.cli_type_name == "boolean" and type(arg).__name__ == "BooleanArgument"
    ):
        count: Nargs = 0
    elif nargs is not None:
        count = nargs
    elif arg.cli_type_name == "list":
        count = "*"
    else:
        count = 1
    positional = bool(getattr(arg, "positional_arg", False)) or not arg.cli_name.startswith("-")
    name = arg.cli_name if positional or arg.cli_name.startswith("--") else f"--{arg.cli_name}"
    return OptionSpec(
        name=name,
        nargs=count,
        required=bool(getattr(arg, "required", False)),
        type_name=str(arg.cli_type_name),
        positional=positional,
    )


def _operation_spec(service: str, operation: str, command: Any) -> OperationSpec:
    from awscli.clidriver import ServiceOperation

    is_api = type(command) is ServiceOperation
    try:
        arg_table = command.arg_table
    except Exception:  # a customization whose table cannot be built
        arg_table = {}
    specs = [_option_spec(arg) for arg in arg_table.values()]
    options = {s.name: s for s in specs if not s.positional}
    positionals = tuple(s for s in specs if s.positional)
    streaming_input = None
    streaming_output = False
    if is_api:
        model = command._operation_model
        streaming_output = bool(model.has_streaming_output)
        if model.has_streaming_input:
            payload = model.input_shape.serialization.get("payload")
            if payload:
                from botocore import xform_name

                streaming_input = "--" + xform_name(payload, "-")
    return OperationSpec(
        service=service,
        name=operation,
        kind="api" if is_api else "custom",
        options=options,
        positionals=positionals,
        streaming_input_option=streaming_input,
        streaming_output=streaming_output,
    )
