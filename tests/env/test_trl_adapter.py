"""Our AWS env inside TRL: ``env.trl_adapter.AwsCliTool`` as GRPOTrainer's ``environment_factory``.

The adapter on its own (a tool call runs one command in the rollout's own account, the reward is
the env grader's return), then TRL's own GRPOTrainer (the installed version's contract: it probes
the class for ``reset``, tools and ``get_reward``) training two steps on the tiny model with it."""

from __future__ import annotations

import pytest

from env.trl_adapter import AwsCliTool, task_dataset


def test_a_tool_call_runs_one_command_in_its_own_account_and_is_graded():
    solver, idler = AwsCliTool(), AwsCliTool()
    task = solver.reset(task_id="s3-list-objects", seed=0, prompt="(the row's prompt)")
    idler.reset(task_id="s3-list-objects", seed=0)
    assert task.startswith("Task:") and "reports-2024" in task
    first = solver.aws("aws s3api list-buckets")
    assert "reports-2024" in first  # the seeded initial state of this task
    done = solver.aws("aws s3api list-objects-v2 --bucket reports-2024")
    assert solver.get_reward() > 0.5
    assert "over" in solver.aws("aws s3api list-buckets")  # no commands after the end
    assert "achieved" in done.lower() or "complete" in done.lower(), done
    bad = idler.aws("rm -rf /")
    assert "aws" in bad.lower() and idler.get_reward() < 0  # a bad command is an observation
    assert idler.get_reward() < solver.get_reward()


def test_task_dataset_rows_carry_the_task_and_seed_that_reset_reads():
    rows = task_dataset("warmup", seeds=2, task_ids=["s3-list-objects", "iam-list-users"])
    assert len(rows) == 4 and set(rows.column_names) == {"prompt", "task_id", "seed"}
    assert rows[0]["prompt"][0]["role"] == "system" and rows[0]["prompt"][-1]["role"] == "user"


@pytest.mark.timeout(900)
def test_trl_grpo_trainer_trains_on_the_aws_env_through_the_adapter(tiny_model_path, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer
    from trl.chat_template_utils import qwen2_5_chat_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    # TRL parses tool calls for the chat templates it knows; the tiny model speaks ChatML with
    # the same special tokens as Qwen2.5, so it gets Qwen2.5's template (with tools).
    tokenizer.chat_template = qwen2_5_chat_template
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype="float32")
    args = GRPOConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, num_generations=2,
        max_completion_length=16, learning_rate=1e-4, logging_steps=1, report_to=[],
        use_cpu=True, save_strategy="no", temperature=1.0, max_tool_calling_iterations=2,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        train_dataset=task_dataset("warmup", task_ids=["s3-list-objects", "iam-list-users"]),
        environment_factory=AwsCliTool,
        args=args,
    )
    assert [t.__name__ for t in trainer.tools] == ["aws"]
    assert trainer.reward_func_names == ["AwsCliTool"]  # the env owns the reward
    trainer.train()
    assert trainer.state.global_step == 2
    # Every rollout ran on an instance TRL reset to a task of its dataset row, and each step was
    # scored by the env's grader (the untrained tiny model writes no tool calls, so its return
    # is 0: the tool itself is exercised by the test above).
    instances = [env for pool in trainer._environment_pool.values() for env in pool]
    assert len(instances) >= 2
    assert {env.task_id for env in instances} <= {"s3-list-objects", "iam-list-users"}
    assert all(env.task_id is not None for env in instances)
    logged = [row["rewards/AwsCliTool/mean"] for row in trainer.state.log_history
              if "rewards/AwsCliTool/mean" in row]  # fmt: skip
    assert logged == [0.0, 0.0]
