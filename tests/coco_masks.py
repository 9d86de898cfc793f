"""pycocotools ground truth and segm results built from binary masks, for the tests of the instance metrics that
read them (segjax.evaluation.voc_regions, boundary, overlap)."""
import contextlib
import io

import numpy as np
from pycocotools import coco as pycoco
from pycocotools import mask as mask_util


def category_id(label):
  """The category id of label 1..C: 10 x label, so that code confusing a label with a category id fails."""
  return 10 * label


def rle(mask):
  """The compressed RLE of a binary mask [H, W], counts as a string (as COCO JSON files hold them)."""
  encoded = mask_util.encode(np.asfortranarray(np.asarray(mask).astype(np.uint8)))
  encoded["counts"] = encoded["counts"].decode("ascii")
  return encoded


def ground_truth(objects, image_shape, num_images, num_classes):
  """A pycocotools COCO of images 1..num_images of `image_shape` (H, W), categories of labels 1..num_classes and
  one annotation (ids 1, 2, ...) per (image id, label, mask [H, W], crowd) of `objects`."""
  h, w = image_shape
  coco = pycoco.COCO()
  coco.dataset = {
      "images": [{"id": i, "height": h, "width": w} for i in range(1, num_images + 1)],
      "categories": [{"id": category_id(c), "name": str(c)} for c in range(1, num_classes + 1)],
      "annotations": [{"id": k + 1, "image_id": i, "category_id": category_id(c), "segmentation": rle(m),
                       "area": float(np.sum(m)), "bbox": list(mask_util.toBbox(rle(m))), "iscrowd": int(crowd)}
                      for k, (i, c, m, crowd) in enumerate(objects)]}
  with contextlib.redirect_stdout(io.StringIO()):
    coco.createIndex()
  return coco


def segm_results(detections):
  """COCO segm results of (image id, label, mask [H, W], score) detections."""
  return [{"image_id": i, "category_id": category_id(c), "segmentation": rle(m), "score": s}
          for i, c, m, s in detections]
