"""Training: state, sharded steps, checkpoints, metric writers."""
