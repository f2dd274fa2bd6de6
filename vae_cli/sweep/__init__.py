"""Sweeps (`vae train -m ...`): job rows and summary.csv (summary.py), the Hydra callbacks (callbacks.py), and
the guard that still summarises a sweep stopped by a failure or Ctrl-C (guard.py)."""
