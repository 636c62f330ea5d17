"""Short plain-text help pages, rendered from the CLI's own tables.

``aws help``, ``aws <service> help`` and ``aws <service> <operation> help`` would
start awscli's man-page renderer and a pager (other programs, never allowed in the
sandbox). The agent still deserves an answer, so the env renders a compact page
itself: the services, a service's operations, or an operation's options with the
required ones first.
"""

from __future__ import annotations

import textwrap

from env.cli_model import CliModel, OperationSpec, OptionSpec

_HINT_LINE = "For a hint about your task, run: aws help --task-hint"


def render_help(cli: CliModel, service: str | None, operation: str | None) -> str:
    """The help page for ``aws [service [operation]] help``."""
    if service is None:
        return _services_page(cli)
    if not cli.has_service(service):
        return f"Unknown service {service!r}; close matches: {cli.close_services(service)}"
    if operation is None:
        return _service_page(cli, service)
    spec = cli.operation(service, operation)
    if spec is None:
        return (
            f"'aws {service}' has no operation {operation!r}; close matches: "
            f"{cli.close_operations(service, operation)}"
        )
    return _operation_page(spec)


def _services_page(cli: CliModel) -> str:
    names = textwrap.fill(", ".join(cli.services), width=100)
    return (
        "usage: aws <service> <operation> [options]\n"
        "Run 'aws <service> help' for a service's operations.\n"
        f"{_HINT_LINE}\n\nServices:\n{names}\n"
    )


def _service_page(cli: CliModel, service: str) -> str:
    ops = textwrap.fill(", ".join(cli.operations(service)), width=100)
    return (
        f"usage: aws {service} <operation> [options]\n"
        f"Run 'aws {service} <operation> help' for an operation's options.\n\n"
        f"Operations:\n{ops}\n"
    )


def _operation_page(spec: OperationSpec) -> str:
    usage = " ".join(
        ["aws", spec.service, spec.name]
        + [_usage(o) for o in spec.positionals]
        + [_usage(o) for o in spec.options.values() if o.required]
        + ["[options]"]
    )
    lines = [f"usage: {usage}", ""]
    required = [o for o in spec.options.values() if o.required]
    optional = [o for o in spec.options.values() if not o.required]
    if required:
        lines.append("Required:")
        lines.extend(f"  {_describe(o)}" for o in required)
    if optional:
        lines.append("Optional:")
        lines.extend(f"  {_describe(o)}" for o in optional)
    return "\n".join(lines) + "\n"


def _usage(option: OptionSpec) -> str:
    if option.positional:
        return f"<{option.name}>"
    return f"{option.name} <{option.type_name}>" if option.nargs != 0 else option.name


def _describe(option: OptionSpec) -> str:
    if option.nargs == 0:
        return f"{option.name} (flag)"
    many = " ..." if option.nargs in ("*", "+") else ""
    return f"{option.name} <{option.type_name}>{many}"
