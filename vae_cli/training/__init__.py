"""Training: the loop (loop.py), its interval meter (meter.py), the run's state and checkpoints (state.py),
optimisers and schedules (optim.py), devices and precision (runtime.py), data parallelism (distributed.py)."""
