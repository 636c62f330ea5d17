"""Grading: run a task's checks against the sandbox's real state.

``grade(task, call)`` evaluates every ``Check`` of a task through ``call``, an
``ApiCaller`` the sandbox provides (service, operation, params -> parsed response,
raising ``ApiCallError`` on an AWS error). The agent's commands are never looked at:
only the state they left behind. ``progress`` is the weighted fraction of passing
checks, and ``achieved`` means all pass, so progress reaches 1 only on success.

Read-only (warmup) tasks change no state, so they are graded on the sandbox's audit
log instead: ``ApiEventRecorder`` hooks the botocore session the agent's commands run
through and records each API call (like CloudTrail); pass its ``events`` to ``grade``.
Checks on the ``audit`` pseudo service see ``{"Events": [{"service", "operation",
"params", "error"}, ...]}``. Check expressions may use ``from_json(text)`` to look
inside policies AWS returns as JSON strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import jmespath
from jmespath import functions
from jmespath.exceptions import JMESPathError

from env.task_spec import AUDIT_SERVICE, LOOKUP_MARKER, ApiCall, Check, Task

ApiCaller = Callable[[str, str, dict], dict]


class ApiCallError(Exception):
    """An AWS error answered by the sandbox, e.g. code ``NoSuchEntity``."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ApiEvent:
    """One API call the agent made: botocore names, its parameters, its error code if any."""

    service: str
    operation: str
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    weight: float
    detail: str  # why it failed (or "ok"); for logs and debugging tasks


@dataclass(frozen=True)
class Grade:
    """The verdict on one state: progress in [0, 1], achieved iff every check passes."""

    progress: float
    achieved: bool
    passed: tuple[str, ...]
    failed: tuple[str, ...]
    results: tuple[CheckResult, ...] = ()


class _CheckFunctions(functions.Functions):
    """JMESPath functions for checks beyond the standard set."""

    # AWS returns many policies as JSON text (SQS/SNS attributes, S3 bucket policies);
    # parsing them lets a check look at fields instead of matching text.
    @functions.signature({"types": ["string", "null"]})
    def _func_from_json(self, text: str | None) -> Any:
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return None


_OPTIONS = jmespath.Options(custom_functions=_CheckFunctions())


def search(expr: str, data: Any) -> Any:
    """JMESPath search with the check functions (``from_json``) available."""
    return jmespath.search(expr, data, options=_OPTIONS)


def truthy(value: Any) -> bool:
    """JMESPath truthiness: null, false, and empty string/list/object are false; 0 is true."""
    if value is None or value is False:
        return False
    return not (isinstance(value, str | list | dict) and len(value) == 0)


def _fill_lookup(value: Any, found: Any) -> Any:
    if value == LOOKUP_MARKER:
        return found
    if isinstance(value, str) and LOOKUP_MARKER in value:
        return value.replace(LOOKUP_MARKER, str(found))
    if isinstance(value, dict):
        return {k: _fill_lookup(v, found) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_lookup(v, found) for v in value]
    return value


def _error_code(exc: Exception) -> str | None:
    """The AWS error code of ``ApiCallError`` or botocore's ``ClientError``; else None."""
    if isinstance(exc, ApiCallError):
        return exc.code
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


class _Caller:
    """Routes audit calls to the recorded events and everything else to the sandbox."""

    def __init__(self, task: Task, call: ApiCaller, events: Sequence[ApiEvent] | None) -> None:
        self.task, self.call, self.events = task, call, events

    def __call__(self, api: ApiCall, params: dict[str, Any]) -> dict:
        if api.service != AUDIT_SERVICE:
            return self.call(api.service, api.operation, params)
        if self.events is None:
            raise ValueError(
                f"task '{self.task.id}' is graded on the agent's API calls: pass "
                "events=ApiEventRecorder.events to grade()"
            )
        return {"Events": [asdict(e) for e in self.events]}


def evaluate_check(check: Check, caller: Callable[[ApiCall, dict], dict]) -> CheckResult:
    """Run one check. Unexpected exceptions (a broken sandbox) propagate; AWS errors don't."""

    def result(passed: bool, detail: str) -> CheckResult:
        return CheckResult(check.name, passed, check.weight, detail)

    params, expect = check.call.resolved_params(), check.expect
    if check.lookup is not None:
        try:
            looked = caller(check.lookup.call, check.lookup.call.resolved_params())
        except Exception as exc:
            if _error_code(exc) is None:
                raise
            return result(False, f"lookup failed: {exc}")
        try:
            found = search(check.lookup.expr, looked)
        except JMESPathError as exc:
            return result(False, f"lookup {check.lookup.expr!r} could not be evaluated: {exc}")
        if not truthy(found) or isinstance(found, dict | list):
            return result(False, f"lookup {check.lookup.expr!r} found {found!r}")
        params = _fill_lookup(params, found)
        expect = _fill_lookup(expect, found)
    try:
        response = caller(check.call, params)
    except Exception as exc:
        code = _error_code(exc)
        if code is None:
            raise
        if check.expect_error is not None and code == check.expect_error:
            return result(True, "ok")
        return result(False, f"{check.call.operation} failed with {code}")
    if expect is None:
        if check.expect_error is not None:
            return result(False, f"{check.call.operation} succeeded; expected {check.expect_error}")
        return result(True, "ok")
    try:
        value = search(expect, response)
    except JMESPathError as exc:
        # A missing field reaching a typed function (contains(null, ...)) means the state is
        # not there yet; it is a failed check, not a crash.
        return result(False, f"{expect!r} could not be evaluated: {exc}")
    if truthy(value):
        return result(True, "ok")
    return result(False, f"{expect!r} is not true")


def grade(task: Task, call: ApiCaller, events: Sequence[ApiEvent] | None = None) -> Grade:
    """Evaluate every check of ``task`` on the sandbox behind ``call``.

    ``events``: the agent's recorded API calls, needed by tasks with audit checks.
    """
    caller = _Caller(task, call, events)
    results = tuple(evaluate_check(c, caller) for c in task.checks)
    total = sum(r.weight for r in results)
    got = sum(r.weight for r in results if r.passed)
    achieved = all(r.passed for r in results)
    # Exact 1.0 only when achieved, whatever floating point does with the weights.
    progress = 1.0 if achieved else min(got / total, 0.999)
    return Grade(
        progress=progress,
        achieved=achieved,
        passed=tuple(r.name for r in results if r.passed),
        failed=tuple(r.name for r in results if not r.passed),
        results=results,
    )


class ApiEventRecorder:
    """Records every API call made through a botocore session as ``ApiEvent``s.

    ``attach`` it to the session the agent's commands run through (the awscli driver's
    ``driver.session``), never to the grader's or setup's client, and ``clear()`` it
    when an episode resets so setup calls are not counted as the agent's.
    """

    def __init__(self) -> None:
        self.events: list[ApiEvent] = []

    def attach(self, session: Any) -> None:
        # The user-level params are only visible before serialisation; stash them in the
        # per-request context and read them back once the response is parsed.
        session.register("before-parameter-build", self._remember_params)
        session.register("after-call", self._record)

    def clear(self) -> None:
        self.events.clear()

    @staticmethod
    def _remember_params(params: dict, context: dict, **_: Any) -> None:
        context["rlfarm_params"] = json.loads(json.dumps(params, default=str))

    def _record(self, parsed: dict, model: Any, context: dict, **_: Any) -> None:
        error = parsed.get("Error", {}).get("Code") if isinstance(parsed, dict) else None
        self.events.append(
            ApiEvent(
                service=model.service_model.service_name,
                operation=model.name,
                params=context.get("rlfarm_params", {}),
                error=error,
            )
        )
