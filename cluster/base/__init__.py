"""What every part of the cluster shares: the farm's config, placement, Ray start-up, the
train/held-out task split and progress lines. Imports nothing else from ``cluster``."""
