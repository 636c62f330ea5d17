"""Safety end to end, inside real sandbox processes: refusals, host guard, scrubbed env, limits.

- every unsafe command is refused with a message that says what was wrong, costs the
  failure penalty, and the episode goes on (the next ordinary command works);
- a secret sentinel file on the host is never read (its text never shows up anywhere)
  nor written, and no file appears next to it;
- behind the policy, the host guard stops what moto itself would do: an SNS
  subscription to an http endpoint never reaches a real listening socket;
- the sandbox process's environment is scrubbed: the caller's AWS profile, endpoint and keys
  do not leak in;
- a command that runs too long is stopped, output is capped, and the episode goes on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from env.environment import AwsEnv
from env.reward import RewardConfig
from env.sandbox_pool import SandboxPool
from tests.env.env_support import REPO_ROOT, catalog_of, make_task

SECRET = "sentinel-secret-7f3a9c"
TASK = make_task("safety-task", setup=["aws s3api create-bucket --bucket data"])


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(processes=1, prewarm=False) as p:
        yield p


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    path = tmp_path / "sentinel.json"
    path.write_text(f'{{"Version": "2012-10-17", "secret": "{SECRET}"}}')
    return path


def unsafe_commands(sentinel: Path) -> list[tuple[str, str]]:
    """(command, refusal code) pairs that try to touch the host in every way we know."""
    here = sentinel.parent
    return [
        (f"aws s3api put-bucket-policy --bucket data --policy file://{sentinel}", "local_file"),
        (f"aws iam create-role --role-name r --cli-input-json file://{sentinel}", "local_file"),
        (
            f"aws lambda create-function --function-name f --zip-file fileb://{sentinel}",
            "local_file",
        ),
        (f"aws s3 cp {sentinel} s3://data/stolen", "local_file"),
        (f"aws s3 sync {here} s3://data/", "local_file"),
        (f"aws s3 cp s3://data/x {here}/written.txt", "local_file"),
        (f"aws s3api put-object --bucket data --key k --body {sentinel}", "local_file"),
        (f"aws s3api get-object --bucket data --key k {here}/out.bin", "local_file"),
        (f"cat {sentinel}", "not_aws"),
        (f"aws s3 ls; cat {sentinel}", "shell_syntax"),
        (f"aws s3 ls > {here}/listing.txt", "shell_syntax"),
        (f"aws s3api put-bucket-policy --bucket data --policy $(cat {sentinel})", "shell_syntax"),
        ("aws s3 ls --endpoint-url http://127.0.0.1:1", "forbidden_option"),
        ("aws s3 ls --profile default", "forbidden_option"),
        ("aws configure set aws_access_key_id AKIA", "configure"),
        ("aws ec2 wait instance-running --instance-ids i-123", "waiter"),
        ("aws ssm start-session --target i-123", "customization"),
        ("aws logs start-live-tail --log-group-identifiers g", "customization"),
    ]


def test_unsafe_commands_are_refused_and_the_episode_goes_on(
    pool: SandboxPool, sentinel: Path
) -> None:
    before = sentinel.read_bytes()
    files_before = sorted(p.name for p in sentinel.parent.iterdir())
    # A long episode needs a larger completion bonus to keep finishing dominant.
    reward = RewardConfig(completion_bonus=5.0)
    commands = unsafe_commands(sentinel)
    steps = 2 * len(commands) + 2
    with AwsEnv(catalog_of(TASK), pool=pool, max_steps=steps, reward=reward) as env:
        env.reset(TASK.id, seed=0)
        for step, (command, code) in enumerate(commands, start=1):
            obs = env.step(command)
            assert not obs.command_success, command
            assert obs.metadata["refusal"] == code, (command, obs.error)
            assert obs.error and len(obs.error) > 30, obs.error  # says what and why
            assert obs.reward == pytest.approx(-reward.failure_cost - reward.step_cost)
            assert obs.step == 2 * step - 1 and not obs.done
            assert SECRET not in obs.output + obs.error
            ok = env.step("aws s3api list-objects-v2 --bucket data")
            assert ok.command_success, ok.error
            assert SECRET not in ok.output
        state = env.state()
    assert state.step_count == 2 * len(commands)
    assert sentinel.read_bytes() == before
    assert sorted(p.name for p in sentinel.parent.iterdir()) == files_before
    # The policy caught all of them: the runtime guard never had to step in.
    assert pool.stats()[0]["guard_blocked"] == []


def test_guard_stops_moto_from_reaching_the_network(pool: SandboxPool) -> None:
    """SNS publishes to http subscribers with a real request; the guard must stop it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        with AwsEnv(catalog_of(TASK), pool=pool) as env:
            env.reset(TASK.id, seed=0)
            topic = "arn:aws:sns:us-east-1:123456789012:alerts"
            assert env.step("aws sns create-topic --name alerts").command_success
            subscribe = (
                f"aws sns subscribe --topic-arn {topic} --protocol http "
                f"--notification-endpoint http://127.0.0.1:{port}/hook"
            )
            assert env.step(subscribe).command_success
            published = env.step(f"aws sns publish --topic-arn {topic} --message hi")
            assert not published.command_success
            assert "not allowed in the sandbox" in published.error
            assert env.step("aws sns list-topics").command_success  # the episode goes on
        with pytest.raises(TimeoutError):
            listener.accept()
    blocked = pool.stats()[0]["guard_blocked"]
    assert any("network access" in b for b in blocked), blocked


def test_host_guard_blocks_files_processes_and_sockets(tmp_path: Path, sentinel: Path) -> None:
    """The audit hook itself, in a fresh interpreter (hooks cannot be removed)."""
    private = tmp_path / "private"
    private.mkdir()
    script = textwrap.dedent(
        f"""
        import json, os, socket, subprocess, sys
        from pathlib import Path
        from env.host_guard import HostGuard, HostAccessError
        guard = HostGuard(Path({str(private)!r}))
        guard.install()
        results = {{}}
        def attempt(name, fn):
            try:
                fn()
                results[name] = "allowed"
            except HostAccessError:
                results[name] = "blocked"
        with guard.armed():
            attempt("read_sentinel", lambda: open({str(sentinel)!r}).read())
            attempt("write_next_to_it", lambda: open({str(tmp_path / "new.txt")!r}, "w"))
            attempt("list_host_dir", lambda: os.listdir({str(tmp_path)!r}))
            attempt("subprocess", lambda: subprocess.run(["true"]))
            attempt("os_system", lambda: os.system("true"))
            attempt("connect", lambda: socket.create_connection(("127.0.0.1", 9), 1))
            attempt("dns", lambda: socket.getaddrinfo("example.com", 443))
            attempt("read_python_lib", lambda: open(json.__file__).read())
            attempt("write_private", lambda: open({str(private / "ok.txt")!r}, "w").close())
        attempt("read_when_disarmed", lambda: open({str(sentinel)!r}).read())
        print(json.dumps(results))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    results = json.loads(out.stdout.strip().splitlines()[-1])
    blocked = ["read_sentinel", "write_next_to_it", "list_host_dir", "subprocess"]
    blocked += ["os_system", "connect", "dns"]
    assert {k: results[k] for k in blocked} == dict.fromkeys(blocked, "blocked")
    assert results["read_python_lib"] == "allowed"
    assert results["write_private"] == "allowed"
    assert results["read_when_disarmed"] == "allowed"
    assert not (tmp_path / "new.txt").exists()


def test_worker_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's AWS settings would break every command if they leaked into the sandbox."""
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAHOSTKEY000000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-southeast-2")
    with (
        SandboxPool(processes=1, prewarm=False) as own_pool,
        AwsEnv(catalog_of(TASK), pool=own_pool) as env,
    ):
        env.reset(TASK.id, seed=0)
        identity = env.step("aws sts get-caller-identity")
        assert identity.command_success, identity.error
        assert '"Account": "123456789012"' in identity.output
        queue = env.step("aws sqs create-queue --queue-name q")
        assert queue.command_success, queue.error
        assert "ap-southeast-2" not in queue.output


def test_slow_command_is_stopped_and_output_is_capped(pool: SandboxPool) -> None:
    # A fresh world's first EC2 call builds moto's EC2 backend (well over 50 ms).
    with AwsEnv(catalog_of(TASK), pool=pool, command_timeout_s=0.05, max_output_chars=300) as env:
        env.reset(TASK.id, seed=0)
        slow = env.step("aws ec2 describe-vpcs")
        assert not slow.command_success
        assert slow.metadata.get("timed_out") is True
        assert "did not finish within" in slow.error
        assert env.step("aws s3api head-bucket --bucket data").command_success
    with AwsEnv(catalog_of(TASK), pool=pool, max_output_chars=300, max_steps=24) as env:
        env.reset(TASK.id, seed=0)
        for i in range(20):
            assert env.step(
                f"aws s3api put-object --bucket data --key k/long-name-{i:03d}"
            ).command_success
        listing = env.step("aws s3api list-objects-v2 --bucket data")
        assert listing.command_success
        assert "[output truncated at 300 characters]" in listing.output
        assert len(listing.output) < 400
        assert env.step("aws s3api head-bucket --bucket data").command_success
