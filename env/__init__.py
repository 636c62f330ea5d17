"""The AWS-CLI agent environment: tasks, a moto sandbox, a safe executor, rewards, a server.

Map of the parts (data flows top to bottom):

- ``tiers`` / ``catalog`` / ``grader`` / ``prompts``: tasks, how their state is judged, agent text;
- ``types``: the wire types (action, observation, state), OpenEnv-shaped;
- ``environment.AwsEnv``: the in-process Env API (reset/step/state/close) for rollout
  sandbox processes; ``server`` (+ ``server_settings``, ``sessions``) + ``client``: the same over
  HTTP/WebSocket;
- ``sandbox_pool`` -> ``sandbox_process``: sandbox processes, episodes routed to them;
- ``task_episode``: one episode's rules (hints, reward, disruption, ends) inside a sandbox process;
- ``executor`` -> ``command_policy`` (+ ``cli_model``, ``cli_help``): check one command,
  then run it; ``sandbox``: moto + awscli in-process, one isolated world per episode;
  ``host_guard``: the runtime guard behind the policy;
- ``reward``, ``disruption``: reward shaping and an optional mid-episode change to the world;
- ``sft_export``, ``task_variants``: SFT demonstrations played against the real sandbox.

Nothing here imports vLLM, Ray or torch.
"""
