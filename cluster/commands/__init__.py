"""What a person runs: the ``rlfarm`` command line, the training entry point, the cluster demo."""
