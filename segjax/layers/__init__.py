"""Flax building blocks shared by several models."""
