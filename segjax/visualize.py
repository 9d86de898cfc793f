"""Pictures for people: input | ground truth | prediction, labels blended over the image."""
import os

import numpy as np
from PIL import Image


def palette(num_colors: int = 256) -> np.ndarray:
  """The PASCAL VOC colour map: [num_colors, 3] uint8, label 255 drawn white by convention of the devkit."""
  colors = np.zeros((num_colors, 3), np.uint8)
  for label in range(num_colors):
    value, r, g, b = label, 0, 0, 0
    for shift in range(7, -1, -1):
      r |= ((value >> 0) & 1) << shift
      g |= ((value >> 1) & 1) << shift
      b |= ((value >> 2) & 1) << shift
      value >>= 3
    colors[label] = (r, g, b)
  return colors


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.6) -> np.ndarray:
  """image float [H,W,3] in [0,1], labels int [H,W] (255 = ignore, drawn white) -> uint8 [H,W,3]."""
  colors = palette()[np.clip(labels, 0, 255)].astype(np.float32) / 255.0
  blended = (1 - alpha) * np.clip(image, 0, 1) + alpha * colors
  return (255 * blended).round().astype(np.uint8)


def semantic_panel(image, ground_truth, prediction) -> np.ndarray:
  """One row: the input, the ground truth overlay and the prediction overlay, 2 px apart."""
  gap = np.full((image.shape[0], 2, 3), 255, np.uint8)
  return np.concatenate([(255 * np.clip(image, 0, 1)).round().astype(np.uint8), gap,
                         overlay(image, ground_truth), gap, overlay(image, prediction)], axis=1)


def save_semantic_pictures(path: str, images, ground_truths, predictions) -> str:
  """Stacks one panel per image into a PNG at `path`; returns the path."""
  rows = [semantic_panel(i, g, p) for i, g, p in zip(images, ground_truths, predictions)]
  gap = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
  picture = np.concatenate([x for row in rows for x in (row, gap)][:-1], axis=0)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(picture).save(path)
  return path
