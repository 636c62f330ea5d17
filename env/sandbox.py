"""The moto-backed AWS sandbox: many isolated episodes in one sandbox process.

One ``MotoHost`` per sandbox process owns moto's in-process mock (``mock_aws``), one
reused awscli driver (building it costs ~100 ms; reusing it makes a command cost a few
ms instead of a ~0.4 s ``aws`` subprocess), a botocore session for setup and grading
calls, and the host guard. Each episode is a ``Sandbox``: its own copy of all moto
state, swapped in before it runs anything.

Isolation design (why it is correct). moto keeps all state in ``BackendDict``s
(service -> account -> region -> backend) plus a few cross-account registries
stored as attributes of those dicts (S3's global bucket-name registry
``bucket_accounts``, Organizations' ``master_accounts``), and draws ids from one
seedable random generator. A ``Sandbox`` owns a private copy of every one of those:
``MotoHost.switch_to`` saves the current episode's dict contents, registry objects
and random state, then installs the next episode's. Commands run one at a time per
process (awscli's stdout/stderr are process-wide anyway), so exactly one episode's
world is visible whenever anything runs. Consequences:

- the same bucket name in two episodes never collides or leaks (each has its own
  ``bucket_accounts`` and its own S3 backend), and every episode sees the same
  account id (123456789012), so ARNs are identical across a GRPO group;
- resetting is dropping the episode's dicts (cheap) and installing empty ones;
- ids are deterministic: each episode's generator is seeded from (task, seed), so G
  episodes reset with the same task and seed build identical worlds.

moto also appends every model instance to a class-level ``instances_tracked`` list
(for its dashboard); the host empties those lists after each switch and each close so
finished episodes can be freed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from env.host_guard import HostGuard

SANDBOX_ACCOUNT_ID = "123456789012"
SANDBOX_REGION = "us-east-1"
# Throwaway credentials: moto accepts any; these open nothing anywhere else.
SANDBOX_ACCESS_KEY = "AKIASANDBOX000000000"
SANDBOX_SECRET_KEY = "sandbox-secret-key-not-a-real-credential"
# Any request that escaped moto would go to this proxy: a closed local port.
_DEAD_PROXY = "http://127.0.0.1:9"
# Commands run at start-up so first-use costs (loading service models, moto's EC2
# data) are paid once per sandbox process, not inside an episode's first step.
DEFAULT_PREWARM: tuple[tuple[str, ...], ...] = (
    ("sts", "get-caller-identity"),
    ("s3api", "list-buckets"),
    ("s3", "ls"),
    ("iam", "list-roles"),
    ("sqs", "list-queues"),
    ("sns", "list-topics"),
    ("dynamodb", "list-tables"),
    ("lambda", "list-functions"),
    ("ec2", "describe-vpcs"),
)
_LOGGERS = ("awscli", "botocore", "s3transfer", "urllib3")
_MAX_API_BODY_BYTES = 1 << 20


class SetupError(RuntimeError):
    """A task's setup step failed: a catalog problem, reported with the step."""


class CommandTimeout(BaseException):
    """Raised inside a command that ran past its time limit.

    A BaseException so awscli's ``except Exception`` does not swallow it.
    """


@dataclass(frozen=True)
class CliResult:
    """What one CLI command did: exit code and (capped) output."""

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False
    truncated: bool = False
    duration_ms: float = 0.0


@dataclass
class _World:
    """One episode's complete moto state (see the module docstring)."""

    random_state: tuple[Any, ...]
    backends: dict[Any, dict[str, Any]] = field(default_factory=dict)
    registries: dict[tuple[Any, str], dict[Any, Any]] = field(default_factory=dict)
    events: list[Any] = field(default_factory=list)  # the agent's API calls (audit log)


def seed_material(task_id: str, seed: int) -> int:
    """The generator seed of an episode: stable across processes and Python runs."""
    digest = hashlib.sha256(f"{task_id}\x00{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class MotoHost:
    """The per-process sandbox host (see the module docstring). Use ``MotoHost.get()``.

    Starting it takes over the process: its environment is replaced by a scrubbed one
    (no AWS profile, config, proxy or credential variables of the caller survive), its
    HOME and working directory move to an empty private temporary directory, and a
    host guard is installed. Only sandbox processes that exist to host sandboxes start
    it.
    """

    _instance: MotoHost | None = None
    _instance_lock = threading.Lock()

    @classmethod
    def get(cls, prewarm: Sequence[Sequence[str]] = DEFAULT_PREWARM) -> MotoHost:
        with cls._instance_lock:
            if cls._instance is None:
                host = cls()
                host._start(prewarm)
                cls._instance = host
            return cls._instance

    def __init__(self) -> None:
        self.private_dir = Path(tempfile.mkdtemp(prefix="rlfarm-sandbox-"))
        self.guard = HostGuard(self.private_dir)
        self.lock = threading.RLock()  # one sandbox operation at a time per process
        self._current: _World | None = None
        self._api_clients: dict[tuple[str, str], Any] = {}
        self.command_count = 0

    # -- start-up --------------------------------------------------------------------

    def _start(self, prewarm: Sequence[Sequence[str]]) -> None:
        self._scrub_process()
        import botocore.session
        from moto import mock_aws
        from moto.core.base_backend import BackendDict
        from moto.moto_api._internal import mock_random

        from env.cli_model import CliModel
        from env.grader import ApiEventRecorder

        self._backend_dict_type = BackendDict
        self._random = mock_random
        self._mock = mock_aws(config={"core": {"mock_credentials": False}})
        self._mock.start()
        self.driver = _build_driver()
        self.cli = CliModel(self.driver)
        self.recorder = ApiEventRecorder()
        self.recorder.attach(self.driver.session)
        self._api_session = botocore.session.Session()
        self._api_session.set_credentials(SANDBOX_ACCESS_KEY, SANDBOX_SECRET_KEY)
        for session in (self.driver.session, self._api_session):
            session.register("before-send", _refuse_unmocked_request)
        self._base_registry_attrs = set(vars(BackendDict(object, "probe")))
        _load_s3_urls_once()
        _cache_per_object()
        _preload_lazy_readers()
        self.guard.install()
        self._prewarm(prewarm)

    def cleanup(self) -> None:
        """Remove the private temporary directory (the sandbox process is exiting)."""
        import shutil

        shutil.rmtree(self.private_dir, ignore_errors=True)

    def _scrub_process(self) -> None:
        home = self.private_dir / "home"
        work = self.private_dir / "work"
        tmp = self.private_dir / "tmp"
        for d in (home / ".aws", work, tmp):
            d.mkdir(parents=True, exist_ok=True)
        config = home / ".aws" / "config"
        # cli_follow_urlparam=false: awscli would otherwise fetch http(s):// values.
        config.write_text(
            f"[default]\nregion = {SANDBOX_REGION}\noutput = json\ncli_follow_urlparam = false\n"
        )
        keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ}
        os.environ.clear()
        os.environ.update(keep)
        os.environ.update(
            {
                "HOME": str(home),
                "TMPDIR": str(tmp),
                "AWS_ACCESS_KEY_ID": SANDBOX_ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SANDBOX_SECRET_KEY,
                "AWS_DEFAULT_REGION": SANDBOX_REGION,
                "AWS_CONFIG_FILE": str(config),
                "AWS_SHARED_CREDENTIALS_FILE": str(home / ".aws" / "credentials"),
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_PAGER": "",
                "PAGER": "cat",
                "MOTO_ACCOUNT_ID": SANDBOX_ACCOUNT_ID,
                "HTTP_PROXY": _DEAD_PROXY,
                "HTTPS_PROXY": _DEAD_PROXY,
                "http_proxy": _DEAD_PROXY,
                "https_proxy": _DEAD_PROXY,
            }
        )
        tempfile.tempdir = str(tmp)
        os.chdir(work)

    def _prewarm(self, commands: Sequence[Sequence[str]]) -> None:
        scratch = Sandbox(self, seed=0)
        try:
            for argv in commands:
                scratch.run_cli(argv, timeout_s=60.0, record=False)
        finally:
            scratch.close()

    # -- world switching -----------------------------------------------------------

    def new_world(self, seed: int) -> _World:
        return _World(random_state=random.Random(seed).getstate())

    def switch_to(self, world: _World) -> None:
        """Make ``world`` the state every moto call sees (caller holds ``self.lock``)."""
        if self._current is world:
            return
        if self._current is not None:
            self._save(self._current)
        self._install(world)
        self._current = world

    def forget(self, world: _World) -> None:
        """Drop a world for good (its episode closed or reset)."""
        with self.lock:
            if self._current is world:
                # Its state is live in moto's dicts, not saved in ``world``: drop it now.
                for bd in self._backend_dict_type._instances:
                    dict.clear(bd)
                self._current = None
            # moto's class-level instance lists hold every model built since the last
            # switch; a process running one episode after another never switches between
            # live worlds, so without this they kept each closed episode (its EC2 backend
            # alone: ~17k AMI, volume and snapshot objects) for good: +0.5 MiB per episode.
            _forget_tracked_instances()
            world.backends.clear()
            world.registries.clear()
            world.events.clear()

    def _save(self, world: _World) -> None:
        world.backends = {}
        world.registries = {}
        for bd in self._backend_dict_type._instances:
            if dict.__len__(bd):
                world.backends[bd] = dict.copy(bd)
            for name in self._registry_names(bd):
                world.registries[(bd, name)] = getattr(bd, name)
        world.random_state = self._random.getstate()
        _forget_tracked_instances()

    def _install(self, world: _World) -> None:
        for bd in self._backend_dict_type._instances:
            dict.clear(bd)
            saved = world.backends.get(bd)
            if saved:
                dict.update(bd, saved)
            for name in self._registry_names(bd):
                registry = world.registries.get((bd, name))
                if registry is None:
                    registry = world.registries[(bd, name)] = {}
                setattr(bd, name, registry)
        self._random.setstate(world.random_state)
        self.recorder.events = world.events

    def _registry_names(self, bd: Any) -> list[str]:
        # Extra dict attributes of specialised BackendDicts are cross-account registries.
        return [
            name
            for name, value in vars(bd).items()
            if name not in self._base_registry_attrs and isinstance(value, dict)
        ]

    # -- clients for setup and grading ----------------------------------------------

    def api_client(self, service: str, region: str = SANDBOX_REGION) -> Any:
        key = (service, region)
        client = self._api_clients.get(key)
        if client is None:
            client = self._api_session.create_client(service, region_name=region)
            self._api_clients[key] = client
        return client


class Sandbox:
    """One episode's isolated AWS world inside the process's ``MotoHost``.

    ``run_cli`` runs an (already policy-checked) awscli argv, ``call_api`` is the
    grader's ``ApiCaller``, ``run_setup`` runs a trusted task setup step.
    """

    def __init__(self, host: MotoHost, seed: int) -> None:
        self.host = host
        self._world = host.new_world(seed)
        self.closed = False

    @property
    def events(self) -> list[Any]:
        """The agent's recorded API calls in this episode (the audit log)."""
        return self._world.events

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.host.forget(self._world)

    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        if self.closed:
            raise RuntimeError("this sandbox is closed; reset the episode to get a new one")
        with self.host.lock:
            self.host.switch_to(self._world)
            yield

    def run_cli(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float = 10.0,
        max_output_chars: int = 16384,
        record: bool = True,
    ) -> CliResult:
        """Run awscli in-process against this episode's world, with limits.

        ``record=False`` (setup commands) keeps the call out of the audit log.
        """
        host = self.host
        out, err = _CappedStream(max_output_chars), _CappedStream(max_output_chars)
        start = time.perf_counter()
        timed_out = False
        with self._active():
            if not record:
                host.recorder.events = []
            try:
                with (
                    _driver_hygiene(host.driver),
                    host.guard.armed(),
                    _redirect(out, err),
                    _time_limit(timeout_s),
                ):
                    exit_code = _call_driver(host.driver, list(argv))
            except CommandTimeout:
                timed_out, exit_code = True, 124
                err.write(f"\nThe command did not finish within {timeout_s:g} s and was stopped.\n")
            finally:
                host.recorder.events = self._world.events
                host.command_count += 1
        return CliResult(
            exit_code=exit_code,
            stdout=out.text(),
            stderr=err.text(),
            timed_out=timed_out,
            truncated=out.truncated or err.truncated,
            duration_ms=(time.perf_counter() - start) * 1000.0,
        )

    def call_api(self, service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """One botocore call on this world (the grader's ``ApiCaller``).

        Raises ``env.grader.ApiCallError`` for an AWS error, ``ValueError`` for
        parameters botocore rejects before sending (a catalog problem).
        """
        from botocore import xform_name
        from botocore.exceptions import ClientError, ParamValidationError

        from env.grader import ApiCallError

        with self._active():
            client = self.host.api_client(service)
            method = getattr(client, xform_name(operation), None)
            if method is None:
                raise ValueError(f"botocore service {service!r} has no operation {operation!r}")
            try:
                with self.host.guard.armed():
                    response = method(**params)
                    return _plain_response(response)
            except ClientError as exc:
                error = exc.response.get("Error", {})
                raise ApiCallError(
                    str(error.get("Code", "Unknown")), str(error.get("Message", ""))
                ) from None
            except ParamValidationError as exc:
                raise ValueError(f"{service}.{operation}: invalid parameters: {exc}") from None

    def run_setup(self, step: Any, check: Callable[[str], Sequence[str]]) -> None:
        """Run one trusted setup step: an aws CLI string or an ``ApiCall``.

        ``check`` turns a command string into argv (the command policy); setup
        commands obey the same policy as the agent's.
        """
        if isinstance(step, str):
            argv = check(step)
            result = self.run_cli(argv, timeout_s=60.0, max_output_chars=4000, record=False)
            if result.exit_code != 0:
                raise SetupError(f"setup command {step!r} failed: {result.stderr.strip()}")
            return
        from env.grader import ApiCallError

        try:
            self.call_api(step.service, step.operation, step.resolved_params())
        except (ApiCallError, ValueError) as exc:
            raise SetupError(f"setup call {step.service}.{step.operation} failed: {exc}") from exc


# ---------------------------------------------------------------------------------
# awscli driver: build once, keep clean between commands


def _build_driver() -> Any:
    from awscli.clidriver import create_clidriver

    driver = create_clidriver()
    driver._get_command_table()
    driver._get_argument_table()
    session = driver.session
    original = session.create_client
    cache: dict[tuple[Any, ...], Any] = {}

    # awscli creates a new botocore client for every command (~5 ms, most of a
    # command's cost). Clients hold no per-command state, so reuse one per
    # (service, region, ...) when the call is a plain one; anything unusual (a
    # Config, explicit keys) still gets a fresh client. Set on this session object
    # only, not patched into botocore.
    def create_client(service_name: str, region_name: str | None = None, **kwargs: Any) -> Any:
        simple = all(
            kwargs.get(k) is None
            for k in ("config", "aws_access_key_id", "aws_secret_access_key", "aws_session_token")
        )
        if not simple:
            return original(service_name, region_name=region_name, **kwargs)
        key = (service_name, region_name, *sorted((k, repr(v)) for k, v in kwargs.items()))
        client = cache.get(key)
        if client is None:
            client = cache[key] = original(service_name, region_name=region_name, **kwargs)
        return client

    session.create_client = create_client
    return driver


@contextlib.contextmanager
def _driver_hygiene(driver: Any) -> Iterator[None]:
    """Undo what one ``driver.main`` call leaves behind, so commands cannot leak.

    Each call records ``--region`` etc. as session variables and adds a logging
    handler; without this a later episode's command would inherit the region, and
    handlers would pile up.
    """
    session = driver.session
    variables = dict(session._session_instance_vars)
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    saved = [(lg, list(lg.handlers), lg.level) for lg in loggers]
    try:
        yield
    finally:
        session._session_instance_vars.clear()
        session._session_instance_vars.update(variables)
        for lg, handlers, level in saved:
            lg.handlers[:] = handlers
            lg.setLevel(level)
        # The session-initialized handlers register argument processors on the
        # session; after the first command they are in place, and re-running them
        # on every command would register duplicates (a command would then get
        # slower the longer the driver lives).
        if "_emit_session_event" not in vars(driver):
            driver._emit_session_event = lambda parsed_args: None


def _call_driver(driver: Any, argv: list[str]) -> int:
    try:
        code = driver.main(argv)
    except SystemExit as exc:  # argparse errors, --version
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except Exception as exc:  # report any crash as the command's error
        sys.stderr.write(f"\n{type(exc).__name__}: {exc}\n")
        code = 255
    return int(code or 0)


def _refuse_unmocked_request(request: Any, **_: Any) -> Any:
    """Last ``before-send`` handler: moto's stubber answers first; anything else is refused.

    botocore picks the first non-None answer among ``before-send`` handlers, and moto's
    is registered before this one, so this only answers requests moto did not mock.
    """
    from botocore.awsrequest import AWSResponse

    body = (
        b'{"__type": "SandboxRefused", "message": "This request is outside the sandbox '
        b'and was not sent."}'
    )
    return AWSResponse(request.url, 403, {"Content-Type": "application/json"}, _RawBody(body))


class _RawBody(io.BytesIO):
    def stream(self, **_: Any) -> Iterator[bytes]:
        data = self.read()
        while data:
            yield data
            data = self.read()


def _plain_response(response: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    for key, value in out.items():
        if hasattr(value, "read") and callable(value.read):  # a streaming body
            out[key] = value.read(_MAX_API_BODY_BYTES).decode("utf-8", "replace")
    return out


def _forget_tracked_instances() -> None:
    from moto.core.model_instances import model_data

    for models in model_data.values():
        for cls in models.values():
            tracked = cls.instances_tracked
            if tracked:
                tracked.clear()


def _load_s3_urls_once() -> None:
    """Stop moto re-importing ``moto.s3.urls`` on every S3 request.

    moto 5.2.5's ``S3Backend._url_module`` calls ``importlib.reload(moto.s3.urls)`` on each
    request so URL patterns follow environment variables that may change between
    tests. A sandbox process's environment is fixed once ``MotoHost`` has scrubbed it, so the
    module is loaded once; the reload cost about 1 ms per S3 call (two per S3 step:
    the command and the grading call). Applied only in sandbox processes,
    from ``MotoHost._start``.
    """
    import importlib

    from moto.s3.models import S3Backend

    urls = importlib.reload(importlib.import_module("moto.s3.urls"))
    S3Backend._url_module = property(lambda self: urls)  # type: ignore[method-assign,assignment]


# moto methods memoised with ``functools.cache``/``lru_cache``: the cache is one per class,
# keyed by ``self``, so it holds every object it saw (all, or the last 128), and with it
# that object's whole backend. Subnet's kept each closed episode's EC2 backend (six default
# subnets per backend) for the life of the sandbox process (+0.5 MiB per EC2 episode);
# the per-account backend dict's kept the last 128 episodes' backends of every service.
_CACHED_PER_OBJECT: tuple[tuple[str, str, str], ...] = (
    ("moto.core.base_backend", "AccountSpecificBackend", "_generate_regions"),
    ("moto.ec2.models.subnets", "Subnet", "_base_avail_ip_iterator"),
    ("moto.sns.models", "Subscription", "private_key"),
    ("moto.rds.models", "RDSBackend", "db_cluster_options"),
    ("moto.emr.models", "ElasticMapReduceBackend", "_get_instance_type_names"),
)


def _cache_per_object() -> None:
    """Move those caches onto each object, so they die with their episode's world.

    Same results as moto's (one memo per object and arguments, e.g. a subnet's one running
    IP iterator); only where they are kept changes. A method moto no longer memoises is
    left alone. Applied only in sandbox processes, from ``MotoHost._start``.
    """
    import importlib

    for module_name, class_name, method_name in _CACHED_PER_OBJECT:
        cls = getattr(importlib.import_module(module_name), class_name)
        method = vars(cls).get(method_name)
        original = getattr(method, "__wrapped__", None)
        if original is None or not hasattr(method, "cache_clear"):
            continue
        setattr(cls, method_name, _memo_on_object(original))


def _memo_on_object(method: Callable[..., Any]) -> Callable[..., Any]:
    slot = f"_rlfarm_memo_{method.__name__}"

    @functools.wraps(method)
    def memoised(self: Any, *args: Any) -> Any:
        memo = self.__dict__.setdefault(slot, {})
        if args not in memo:
            memo[args] = method(self, *args)
        return memo[args]

    return memoised


def live_backends() -> int:
    """How many moto service backends are alive in this process (after a collection)."""
    import gc

    from moto.core.base_backend import BaseBackend

    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, BaseBackend))


def _preload_lazy_readers() -> None:
    """Read, before the guard is armed, the system files libraries load on first use."""
    import mimetypes

    mimetypes.init()


# ---------------------------------------------------------------------------------
# Output capture and time limit


class _CappedStream(io.TextIOBase):
    """A text stream (with a ``.buffer`` for binary writes) that keeps the first N chars."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, cap: int) -> None:
        super().__init__()
        self._cap = cap
        self._parts: list[str] = []
        self._kept = 0
        self.truncated = False
        self.buffer = _CappedBinary(self)

    def write(self, s: str) -> int:
        if self._kept < self._cap:
            piece = s[: self._cap - self._kept]
            self._parts.append(piece)
            self._kept += len(piece)
            if len(piece) < len(s):
                self.truncated = True
        elif s:
            self.truncated = True
        return len(s)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def text(self) -> str:
        body = "".join(self._parts)
        if self.truncated:
            body += f"\n... [output truncated at {self._cap} characters]"
        return body


class _CappedBinary(io.RawIOBase):
    def __init__(self, text: _CappedStream) -> None:
        super().__init__()
        self._text = text

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self._text.write(data.decode("utf-8", "replace"))
        return len(data)


@contextlib.contextmanager
def _redirect(out: _CappedStream, err: _CappedStream) -> Iterator[None]:
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = old


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise ``CommandTimeout`` in this thread after ``seconds`` (main thread only).

    Off the main thread no signal can be delivered; the sandbox pool's watchdog, which
    kills a sandbox process that stops answering, is the limit there.
    """
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise CommandTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
