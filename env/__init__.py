"""The AWS-CLI agent environment: tasks, a moto sandbox, a safe executor, rewards, a server.

Map of the parts (data flows top to bottom):

- ``catalog`` / ``grader`` / ``prompts``: tasks, how their state is judged, agent text;
- ``environment.AwsEnv``: the in-process Env API (reset/step/state/close) for rollout
  workers; ``server`` + ``sessions`` + ``client``: the same over HTTP/WebSocket;
- ``pool`` -> ``worker``: sandbox worker processes, episodes routed to them;
- ``episode``: one episode's rules (hints, reward, chaos, ends) inside a worker;
- ``executor`` -> ``command_policy`` (+ ``cli_model``, ``cli_help``): check one command,
  then run it; ``sandbox``: moto + awscli in-process, one isolated world per episode;
  ``host_guard``: the runtime guard behind the policy;
- ``reward``, ``chaos``: reward shaping and optional chaos injection;
- ``commands``, ``bench``: the ``rlfarm env serve`` and ``rlfarm bench env`` commands.

Nothing here imports vLLM, Ray or torch.
"""
