"""Rollouts: the multi-turn episode loop, token-exact trajectories, and the workers that play them.

- ``environment``: the one env contract the loop talks to (``EnvSession``, ``StepResult``);
  ``aws_env``: the AWS-CLI env behind it (reply -> command, observation -> next user turn);
- ``chat``: a conversation as the exact token ids the engine saw (the model's own template);
- ``episode``: one episode (``run_episode``); ``group``: G episodes of one task from one initial
  state, with timeouts and retries; ``parse``: one ``aws ...`` command out of a reply;
- ``types``: ``Turn``/``Trajectory``/``TrajectoryGroup``, what the learner's samples are made of;
- ``config``: ``EnvSettings``/``RolloutSettings``; ``worker``: the rollout-worker Ray actor.

Imports env's client-side types and serving's carriers; never the learner, never Ray at import.
"""
