"""U-Net's pixel-wise loss weight map (Ronneberger et al., MICCAI 2015, Eq. 2).

  w(x) = w_c(x) + w_0 exp(-(d_1(x) + d_2(x))^2 / (2 sigma^2))

w_c balances the class frequencies (each class's pixels get total weight 1 / number of classes present, scaled
so that the mean weight is 1); d_1 and d_2 are the distances to the nearest and the second-nearest cell. The
separation term is applied to background pixels, the narrow gaps between touching cells that the paper wants the
network to learn; inside a cell both distances are not those of a border. w_0 = 10, sigma = 5 pixels (Sec. 3).
Computed on the host from an instance label map (NumPy and SciPy's exact Euclidean distance transform); the input
pipeline computes it per train example with config.dataset.unet_weight_map (segjax/data/augment.py, finish_labels).
"""
import numpy as np
from scipy import ndimage


def class_balance_weights(labels: np.ndarray) -> np.ndarray:
  """w_c [H, W]: each class present gets the same total weight; the mean over the image is 1."""
  classes, counts = np.unique(labels, return_counts=True)
  per_class = labels.size / (len(classes) * counts)
  return per_class[np.searchsorted(classes, labels)].astype(np.float32)


def unet_weight_map(instances: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
  """w [H, W] float32 of an instance map (0 background, k > 0 cell k), Eq. 2."""
  instances = np.asarray(instances)
  weights = class_balance_weights(instances > 0)
  ids = [k for k in np.unique(instances) if k != 0]
  if len(ids) < 2:
    return weights
  distances = np.stack([ndimage.distance_transform_edt(instances != k) for k in ids])  # to each cell
  distances.sort(axis=0)
  border = w0 * np.exp(-np.square(distances[0] + distances[1]) / (2 * sigma**2))
  return (weights + np.where(instances == 0, border, 0)).astype(np.float32)
