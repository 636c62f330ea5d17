"""What a task is: typed records (API calls, checks, drift, the task) and the solution runner.

A task says what the agent must do (``description``), how the sandbox is prepared
(``setup``, plus seeded ``drift`` mutations for drift tasks), how success is judged
(``checks``: AWS API calls on the sandbox's real state, see ``env.grader``), three
hint levels and a canonical solution. Everything is validated with pydantic when the
catalog (``env.catalog``) loads the task files.

Data crosses into the rest of the farm only as these frozen models; the sandbox runs
``Task.setup_steps(seed)`` and the grader evaluates ``Task.checks``.

Solution placeholders: a canonical solution command may contain ``{{N:expr}}``, the
JMESPath ``expr`` evaluated on the JSON output of solution step ``N`` (0-based, an
earlier step). That is how a solution uses an id the sandbox made up (a VPC id, a
KMS key id), exactly as an agent copies it from an observation. ``run_solution``
resolves them while it runs the steps. Setup steps never contain placeholders.

Drift tasks: ``drift.mutations`` lists possible breakages, each with its repair;
``setup_steps(seed)`` appends a seeded choice of ``drift.pick`` of them. The canonical
solution is a function of the seed: ``solution_steps(seed)`` is ``solution`` (the
inspection commands) followed by the repairs of exactly the mutations applied.
"""

from __future__ import annotations

import difflib
import io
import json
import random
import re
import shlex
import zipfile
from collections.abc import Callable, Sequence
from functools import cache
from typing import Annotated, Any

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from env.tiers import Tier

# The pseudo service whose only operation answers with the agent's own API calls
# (service, operation, params, error code) recorded by the sandbox, like CloudTrail.
# Read-only warmup tasks are graded on it: listing changes no other state.
AUDIT_SERVICE = "audit"
AUDIT_OPERATION = "LookupEvents"

MAX_SOLUTION_STEPS = 8
PLACEHOLDER = re.compile(r"\{\{(\d+):([^{}]+)\}\}")
# Checks may carry one looked-up value; this marker in their params is replaced by it.
LOOKUP_MARKER = "{{lookup}}"
ZIP_MARKER = "$zip"
_ZIP_DATE = (2024, 1, 1, 0, 0, 0)  # fixed so the same task always builds identical bytes


# ---------------------------------------------------------------------------------
# API calls (setup steps, checks) and CLI commands


@cache
def _service_model(service: str) -> Any:
    import botocore.session  # botocore is heavy to import; only the loader needs it

    return botocore.session.get_session().get_service_model(service)


@cache
def _known_services() -> frozenset[str]:
    import botocore.session

    return frozenset(botocore.session.get_session().get_available_services())


def build_zip(files: dict[str, str]) -> bytes:
    """A small deterministic zip archive (e.g. a Lambda deployment package) in memory."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            zf.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), files[name])
    return buf.getvalue()


def _resolve_markers(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {ZIP_MARKER}:
            return build_zip(value[ZIP_MARKER])
        return {k: _resolve_markers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_markers(v) for v in value]
    return value


def _check_markers(value: Any, where: str = "params") -> None:
    if isinstance(value, dict):
        if ZIP_MARKER in value:
            files = value[ZIP_MARKER]
            if len(value) != 1 or not isinstance(files, dict) or not files:
                raise ValueError(
                    f"{where}: a '{ZIP_MARKER}' value must be the only key of its mapping and "
                    "map file names to file contents, e.g. {$zip: {index.py: 'def handler...'}}"
                )
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
                raise ValueError(f"{where}: '{ZIP_MARKER}' file names and contents must be text")
            return
        for k, v in value.items():
            _check_markers(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_markers(v, f"{where}[{i}]")


class ApiCall(BaseModel):
    """One AWS API call by botocore names, e.g. ``ApiCall(service="s3", operation="PutObject")``.

    ``params`` are the operation's parameters as boto3 takes them. A mapping
    ``{"$zip": {"index.py": "..."}}`` anywhere in them stands for the bytes of a zip
    holding those files (use ``resolved_params()`` before calling).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str
    operation: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_operation(self) -> ApiCall:
        if self.service == AUDIT_SERVICE:
            if self.operation != AUDIT_OPERATION:
                raise ValueError(
                    f"the '{AUDIT_SERVICE}' pseudo service has one operation, "
                    f"'{AUDIT_OPERATION}'; got '{self.operation}'"
                )
            return self
        if self.service not in _known_services():
            close = difflib.get_close_matches(self.service, _known_services(), n=3)
            raise ValueError(
                f"unknown botocore service '{self.service}' (use botocore names such as "
                f"'s3', 'cognito-idp'); close matches: {close}"
            )
        ops = _service_model(self.service).operation_names
        if self.operation not in ops:
            close = difflib.get_close_matches(self.operation, ops, n=3)
            raise ValueError(
                f"service '{self.service}' has no operation '{self.operation}' (use the "
                f"CamelCase API name, e.g. 'PutObject'); close matches: {close}"
            )
        _check_markers(self.params)
        return self

    def resolved_params(self) -> dict[str, Any]:
        """``params`` with every ``$zip`` marker replaced by the zip's bytes."""
        return _resolve_markers(self.params)


def parse_command(command: str) -> list[str]:
    """Split one ``aws <service> <operation> ...`` command (shlex, no shell) into argv.

    Raises ``ValueError`` saying what is wrong when the command is not of that form.
    """
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ValueError(f"cannot split command {command!r}: {exc} (check the quotes)") from exc
    if len(argv) < 3 or argv[0] != "aws":
        raise ValueError(f"command {command!r} must look like 'aws <service> <operation> ...'")
    if any(a.startswith(("file://", "fileb://")) or "=file://" in a for a in argv):
        raise ValueError(f"command {command!r} reads a file; pass JSON inline in quotes instead")
    return argv


def _validate_command(value: Any) -> Any:
    if isinstance(value, str):
        parse_command(PLACEHOLDER.sub("x", value))
    return value


def _to_setup_step(value: Any) -> Any:
    """YAML gives a string (CLI command) or a mapping (API call); build the right one."""
    if isinstance(value, dict):
        return ApiCall.model_validate(value)
    if isinstance(value, str):
        if PLACEHOLDER.search(value):
            raise ValueError("setup commands cannot use {{N:expr}} placeholders (solutions only)")
        parse_command(value)
        return value
    raise ValueError(
        "a setup step is an aws CLI command string or a mapping {service, operation, params}"
    )


SetupStep = Annotated[str | ApiCall, BeforeValidator(_to_setup_step)]
Command = Annotated[str, BeforeValidator(_validate_command)]


def _compile_jmespath(expr: str, what: str) -> str:
    try:
        parsed = jmespath.compile(expr).parsed
    except JMESPathError as exc:
        raise ValueError(f"{what} {expr!r} is not valid JMESPath: {exc}") from exc
    if _negates_only_the_head(parsed):
        raise ValueError(
            f"{what} {expr!r}: '!' binds tighter than '[...]' and '.', so '!X[?...]' negates X "
            "alone; wrap what you mean to negate in parentheses: '!(X[?...])'"
        )
    return expr


_CHAINS = {"subexpression", "index_expression", "projection", "filter_projection", "flatten"}


def _negates_only_the_head(node: Any) -> bool:
    """True if a chain (X.y, X[0], X[?..]) starts with a negation: almost always a typo."""
    if not isinstance(node, dict):
        return False
    children = node.get("children", [])
    if node.get("type") in _CHAINS and children:
        first = children[0]
        if isinstance(first, dict) and first.get("type") == "not_expression":
            return True
    return any(_negates_only_the_head(c) for c in children)


class Lookup(BaseModel):
    """A value a check needs but cannot know in advance (a hosted-zone id, a pool id).

    ``call`` runs first; ``expr`` picks the value from its response; every ``{{lookup}}``
    in the check's params and ``expect`` is then replaced by it (in ``expect``, as text:
    write it inside quotes, ``'{{lookup}}'``). Nothing found fails the check.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    call: ApiCall
    expr: str

    @field_validator("expr")
    @classmethod
    def _expr_compiles(cls, v: str) -> str:
        return _compile_jmespath(v, "lookup expression")


class Check(BaseModel):
    """One success criterion, judged by an API call on the sandbox's real state.

    It passes when the call succeeds and ``expect`` (JMESPath on the response) is truthy,
    or when the call fails with error code ``expect_error`` (e.g. ``NoSuchEntity`` for
    "must be deleted"). Both may be given (either outcome passes); with neither, the
    call succeeding is enough (e.g. ``HeadBucket``). ``weight`` scales its share of
    the task's partial progress.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    call: ApiCall
    expect: str | None = None
    expect_error: str | None = None
    lookup: Lookup | None = None
    weight: float = Field(default=1.0, gt=0)

    @field_validator("expect")
    @classmethod
    def _expect_compiles(cls, v: str | None) -> str | None:
        return None if v is None else _compile_jmespath(v, "expect expression")

    @model_validator(mode="after")
    def _lookup_used(self) -> Check:
        uses_marker = LOOKUP_MARKER in json.dumps(self.call.params) + (self.expect or "")
        if self.lookup is not None and not uses_marker:
            raise ValueError(f"has a lookup but no '{LOOKUP_MARKER}' in call.params or expect")
        if self.lookup is None and uses_marker:
            raise ValueError(f"'{LOOKUP_MARKER}' is used but the check has no lookup to fill it")
        return self


class Mutation(BaseModel):
    """One possible drift: setup steps that break some of the task's checks, and its repair.

    ``repair`` commands join the canonical solution when the seed picks this mutation;
    they may use ``{{N:expr}}`` placeholders on the task's ``solution`` steps only.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    setup: list[SetupStep] = Field(min_length=1)
    repair: list[Command] = Field(min_length=1)


class Drift(BaseModel):
    """Random breakage for drift tasks: ``pick`` of ``mutations``, chosen by the seed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mutations: list[Mutation] = Field(min_length=2)
    pick: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _pick_fits(self) -> Drift:
        if self.pick > len(self.mutations):
            raise ValueError(f"pick={self.pick} but only {len(self.mutations)} mutations exist")
        names = [m.name for m in self.mutations]
        if len(set(names)) != len(names):
            raise ValueError(f"mutation names must be unique, got {names}")
        return self


class Task(BaseModel):
    """One AWS task: prepare with ``setup_steps(seed)``, judge with ``checks``.

    Use ``solution_steps(seed)`` for the canonical solution (it equals ``solution``
    except for drift tasks).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A renamed copy (env.task_variants) carries its origin: <task id>@<family><k>.
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*(@[a-z]+[0-9]+)?$")
    tier: Tier
    description: str = Field(min_length=10)
    setup: list[SetupStep] = Field(default_factory=list)
    solution: list[Command] = Field(min_length=1, max_length=MAX_SOLUTION_STEPS)
    checks: list[Check] = Field(min_length=1)
    hints: list[str] = Field(min_length=3, max_length=3)
    drift: Drift | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Task:
        names = [c.name for c in self.checks]
        if len(set(names)) != len(names):
            raise ValueError(f"check names must be unique within a task, got {names}")
        for i, cmd in enumerate(self.solution):
            for m in PLACEHOLDER.finditer(cmd):
                ref = int(m.group(1))
                if ref >= i:
                    raise ValueError(
                        f"solution[{i}] uses {{{{{ref}:...}}}} but can only refer to an earlier "
                        f"step (0..{i - 1})"
                    )
                _compile_jmespath(m.group(2), f"solution[{i}] placeholder")
        if self.tier == "warmup" and any(c.call.service != AUDIT_SERVICE for c in self.checks):
            raise ValueError(f"warmup tasks are read-only: grade them on '{AUDIT_SERVICE}' calls")
        if self.drift is not None:
            self._check_repairs(self.drift)
        return self

    def summary(self) -> dict[str, Any]:
        """What ``rlfarm tasks list --json`` shows of a task (never its checks or solution)."""
        return {
            "id": self.id,
            "tier": self.tier,
            "description": self.description,
            "services": self.services,
            "solution_steps": len(self.solution),
            "checks": len(self.checks),
            "drift": self.drift is not None,
        }

    def _check_repairs(self, drift: Drift) -> None:
        longest = sorted((len(m.repair) for m in drift.mutations), reverse=True)
        worst = len(self.solution) + sum(longest[: drift.pick])
        if worst > MAX_SOLUTION_STEPS:
            raise ValueError(
                f"solution plus the {drift.pick} longest repairs is {worst} commands; keep "
                f"every canonical solution to {MAX_SOLUTION_STEPS}"
            )
        for m in drift.mutations:
            for cmd in m.repair:
                for ph in PLACEHOLDER.finditer(cmd):
                    if int(ph.group(1)) >= len(self.solution):
                        raise ValueError(
                            f"mutation '{m.name}' repair uses {ph.group(0)}; repairs may refer "
                            f"only to solution steps 0..{len(self.solution) - 1}"
                        )
                    _compile_jmespath(ph.group(2), f"mutation '{m.name}' repair placeholder")

    def setup_steps(self, seed: int) -> list[SetupStep]:
        """The setup, then (drift tasks) the seeded choice of mutations, in catalog order."""
        steps = list(self.setup)
        for mutation in self.drift_mutations(seed):
            steps.extend(mutation.setup)
        return steps

    def drift_mutations(self, seed: int) -> list[Mutation]:
        """The mutations ``seed`` applies (empty for non-drift tasks); same seed, same choice."""
        if self.drift is None:
            return []
        rng = random.Random(f"{self.id}:{seed}")
        chosen = set(rng.sample(range(len(self.drift.mutations)), self.drift.pick))
        return [m for i, m in enumerate(self.drift.mutations) if i in chosen]

    def solution_steps(self, seed: int) -> list[str]:
        """The canonical solution for the state ``setup_steps(seed)`` builds.

        ``solution``, then (drift tasks) the repairs of the mutations this seed applied,
        so a drift solution inspects first and then fixes exactly what drifted.
        """
        steps = list(self.solution)
        for mutation in self.drift_mutations(seed):
            steps.extend(mutation.repair)
        return steps

    @property
    def services(self) -> list[str]:
        """CLI service names the canonical solution uses, in first-use order."""
        seen: dict[str, None] = {}
        for cmd in self.solution:
            seen.setdefault(shlex.split(cmd)[1], None)
        return list(seen)

    def operations(self) -> list[str]:
        """``service operation`` pairs every canonical solution uses (drift repairs included),
        in first-use order: the CLI skills the task needs."""
        commands = list(self.solution)
        for mutation in self.drift.mutations if self.drift else []:
            commands.extend(mutation.repair)
        seen: dict[str, None] = {}
        for cmd in commands:
            argv = shlex.split(cmd)
            seen.setdefault(" ".join(argv[1:3]), None)
        return list(seen)


# ---------------------------------------------------------------------------------
# Running a canonical solution (placeholders resolved from earlier outputs)


def resolve_command(template: str, outputs: Sequence[str]) -> str:
    """Fill ``{{N:expr}}`` in a solution command from the JSON outputs of earlier steps."""

    def fill(m: re.Match[str]) -> str:
        idx, expr = int(m.group(1)), m.group(2)
        if idx >= len(outputs):
            raise ValueError(f"placeholder {m.group(0)} refers to step {idx}, not run yet")
        try:
            doc = json.loads(outputs[idx])
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"placeholder {m.group(0)}: output of step {idx} is not JSON ({exc}); "
                "run the solution with the CLI's default json output"
            ) from exc
        value = jmespath.search(expr, doc)
        if value is None or isinstance(value, dict | list):
            raise ValueError(f"placeholder {m.group(0)} found {value!r}, not a single value")
        return str(value)

    return PLACEHOLDER.sub(fill, template)


def run_solution(task: Task, execute: Callable[[str], str], seed: int = 0) -> list[str]:
    """Run the canonical solution for ``seed``; ``execute`` runs one command, returns stdout.

    ``execute`` should raise if a command fails. Returns the commands as run
    (placeholders filled in).
    """
    outputs: list[str] = []
    ran: list[str] = []
    for template in task.solution_steps(seed):
        command = resolve_command(template, outputs)
        outputs.append(execute(command))
        ran.append(command)
    return ran
