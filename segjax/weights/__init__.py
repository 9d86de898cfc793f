"""Converters from public checkpoints to segjax variables."""
