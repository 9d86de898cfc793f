"""Compact host batches, and their expansion to the batch the models read.

The host ships (augment.py makes it):
  image uint8 [B, H, W, 3]     semantic uint8 [B, H, W]
  masks_packed uint8 [B, k, H, ceil(W / 8)]: instance slots 0..k-1, bit-packed along W as np.packbits;
    k = `bucket(...)` of the batch, the smallest rung of 1, 2, 4, ..., max_instances that holds every valid slot
  region_masks_packed uint8 [B, P, H, ceil(W / 8)] (SDS's region proposals, when the batch has them), packed alike
and `expand` turns it into the model batch:
  image float32 [B, H, W, 3] in [0, 1]   semantic int32 [B, H, W]   masks uint8 [B, M, H, W] (0/1)
  region_masks uint8 [B, P, H, W] (0/1)
  depth float32 [B, H, W] in metres (from uint16 millimetres, 0 = none), where the batch has depth
the other keys unchanged. At 800x1344 with M = 100 the image crosses as 3.2 MB instead of 12.9 MB and the masks
of a COCO-like batch (mean 7 instances, one image with 100) as about 5 MB per image instead of 107.5 MB
(scripts/bench_input.py: 8.2 MB per image of Mask R-CNN's batch keys instead of 120.4 MB). `expand` runs on the
accelerators (xp=jax.numpy, segjax/train/mesh.py) or in numpy for host-side uses (pictures, tests), with one
compiled program per rung at most.
"""
import numpy as np

COMPACT_KEYS = {"image": "image", "semantic": "semantic", "masks": "masks_packed",
                "region_masks": "region_masks_packed"}  # model key -> host key


def bucket(needed: int, max_instances: int) -> int:
  """The smallest of 1, 2, 4, ... (capped at max_instances) that is >= needed."""
  return min(max(1, 1 << max(int(needed) - 1, 0).bit_length()), max_instances)


def slots_needed(instance_valid) -> int:
  """One past the last valid slot over a batch's rows, bool [B, M] -> int."""
  rows, slots = np.nonzero(instance_valid)
  return int(slots.max()) + 1 if slots.size else 0


def stack_packed(packed_rows, instance_valid) -> np.ndarray:
  """Per-example packed masks [n_i, H, Wp] -> [B, k, H, Wp], k = bucket of the batch (zeros past n_i)."""
  k = bucket(slots_needed(instance_valid), instance_valid.shape[1])
  h, wp = packed_rows[0].shape[1:]
  out = np.zeros((len(packed_rows), k, h, wp), np.uint8)
  for row, packed in zip(out, packed_rows):
    count = min(len(packed), k)
    row[:count] = packed[:count]
  return out


def pack_masks(masks, xp=np):
  """Predicted masks [..., H, W] (probabilities or binary) -> thresholded at > 0.5 (torchvision's COCO
  evaluation), bit-packed along W: uint8 [..., H, ceil(W / 8)]. What evaluation brings back to the host."""
  return xp.packbits(masks > 0.5, axis=-1)


def unpack_masks(packed, width: int) -> np.ndarray:
  """pack_masks' output -> uint8 0/1 [..., H, width]."""
  return np.unpackbits(np.asarray(packed), axis=-1, count=width)


def expand(batch: dict, xp=np) -> dict:
  """The model batch of a compact one (see the module docstring); keys absent from `batch` stay absent."""
  out = {k: v for k, v in batch.items() if k not in COMPACT_KEYS.values()}
  if "image" in batch:
    # A product by the float32 reciprocal: XLA rewrites x / 255 so, and numpy then rounds the same.
    out["image"] = batch["image"].astype(xp.float32) * xp.float32(1 / 255)
  if "semantic" in batch:
    out["semantic"] = batch["semantic"].astype(xp.int32)
  if "depth" in batch:
    out["depth"] = batch["depth"].astype(xp.float32) * xp.float32(1 / 1000)
  if "masks_packed" in batch:
    packed = batch["masks_packed"]
    masks = xp.unpackbits(packed, axis=-1, count=batch["image"].shape[2])  # W from the image beside it
    max_instances = batch["instance_valid"].shape[1]
    out["masks"] = xp.pad(masks, [(0, 0), (0, max_instances - packed.shape[1]), (0, 0), (0, 0)])
  if "region_masks_packed" in batch:  # SDS's region proposals: a fixed count, no bucket
    out["region_masks"] = xp.unpackbits(batch["region_masks_packed"], axis=-1, count=batch["image"].shape[2])
  return out
