"""Depth maps as ordered point clouds (pinhole backprojection).

`backproject`: the camera-frame point X = (u - cx) Z / fx, Y = (v - cy) Z / fy, Z of every pixel (u, v) (column,
row index) of a depth map, as the Unseen Clustering Network's data loader (compute_xyz of
github.com/NVlabs/UnseenObjectClustering, lib/datasets/tabletop_object.py, commit
2600526d9159b020a73da421970b6e867d4007ee) feeds its depth network. A pixel without depth (Z = 0) gives (0, 0, 0).
"""
import jax.numpy as jnp


def backproject(depth, intrinsics):
  """depth float32 [B, H, W] (metres), intrinsics [B, 4] (fx, fy, cx, cy in pixels) -> XYZ float32 [B, H, W, 3]."""
  _, h, w = depth.shape
  fx, fy, cx, cy = (intrinsics[:, i, None, None].astype(jnp.float32) for i in range(4))
  u = jnp.arange(w, dtype=jnp.float32)[None, None, :]
  v = jnp.arange(h, dtype=jnp.float32)[None, :, None]
  z = depth.astype(jnp.float32)
  return jnp.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], -1)
