"""A converted torchvision Mask R-CNN, whose labels are COCO's category ids, evaluated by the loop's eval step and
InstanceEvaluator on a COCO-format folder with COCO-id categories gives torchvision's own detections of the same
images as COCO results (boxes in source pixels, masks pasted at the source size from the mask head's 28 x 28
masks, as torchvision pastes them), and the box and mask AP that pycocotools gives on those."""
import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util

from segjax import models
from segjax.data import pipeline
from segjax.evaluation import coco
from segjax.evaluation.instance import InstanceEvaluator
from segjax.train import loop
from segjax.train import mesh as mesh_lib
from segjax.train.steps import make_eval_step
from train_util import tiny_config

# 3:4 sources of odd sizes that torchvision (min_size 96, max_size 128, floor) and the eval pipeline (fit into
# 96 x 128, round) both resize to exactly 96 x 128: neither pads. The pipeline rounds the resized image to uint8
# (segjax/data/augment.py); torchvision's resize is made to round the same way, so both networks see one input.
SOURCES = ((57, 76), (69, 92), (81, 108))
CATEGORIES = (3, 17, 44, 62, 88)  # the COCO ids the random model detects
GROUND_TRUTH_PER_IMAGE = 3
TOP = 10  # torchvision's detections per image that segjax's results must contain
AP_NAMES = ("box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50", "mask_AP75")


def _images():
  """Smooth colour blobs on a gradient, uint8."""
  rng = np.random.default_rng(0)
  images = []
  for h, w in SOURCES:
    ys, xs = np.mgrid[:h, :w] / np.array([h, w])[:, None, None]
    image = np.stack([ys, xs, 0.5 * (ys + xs)], -1) * 0.5
    for _ in range(5):
      cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.25)
      image[(ys - cy) ** 2 + (xs - cx) ** 2 < r**2] = rng.uniform(0, 1, 3)
    images.append((255 * image).round().astype(np.uint8))
  return images


def _detect_several_categories(model, images):
  """The random model's classifier restricted to CATEGORIES (the others' bias -20), each one's bias offset so that
  their mean logits over this run's RoIs are equal: the detections then carry several categories, not only the one
  whose weights best match the RoI features' common direction."""
  import torch  # pylint: disable=g-import-not-at-top
  features = []
  hook = model.roi_heads.box_head.register_forward_hook(lambda module, inputs, output: features.append(output))
  with torch.no_grad():
    model(images)
    hook.remove()
    classifier = model.roi_heads.box_predictor.cls_score
    classifier.bias[[k for k in range(1, 91) if k not in CATEGORIES]] = -20.0
    logits = features[0] @ classifier.weight[list(CATEGORIES)].T + classifier.bias[list(CATEGORIES)]
    classifier.bias[list(CATEGORIES)] -= logits.mean(0) - logits.mean()


def _round_resized_images(model):
  """torchvision's resize (of the normalised float image) followed by rounding to the uint8 grid, as the eval
  pipeline rounds its resized uint8 image: returns torchvision's own resize, to undo it."""
  import torch  # pylint: disable=g-import-not-at-top
  resize = model.transform.resize
  mean = torch.tensor(model.transform.image_mean)[:, None, None]
  std = torch.tensor(model.transform.image_std)[:, None, None]

  def rounded(image, target=None):
    image, target = resize(image, target)
    return (torch.round((image * std + mean) * 255) / 255 - mean) / std, target

  model.transform.resize = rounded
  return resize


def _detect(model, inputs):
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    return [{k: v.numpy() for k, v in d.items()} for d in model(inputs)]


def _coco_metrics(ground_truth, reference, categories):
  """pycocotools' box and mask metrics of torchvision's detections: their labels are the category ids; those of
  categories the folder lacks are left out, as pycocotools would ignore them."""
  keep = [np.isin(d["labels"], categories) for d in reference]
  detections = [{"image_id": i, "boxes": d["boxes"][k], "scores": d["scores"][k], "labels": d["labels"][k],
                 "masks": d["masks"][k, 0]} for i, (d, k) in enumerate(zip(reference, keep), start=1)]
  identity = {k: k for k in categories}
  metrics, results = {}, {}
  for iou_type in ("bbox", "segm"):
    results[iou_type] = coco.coco_results(detections, identity, iou_type)
    metrics.update(coco.evaluate_results(ground_truth, results[iou_type], iou_type))
  return metrics, results


def _assert_results_contain(ours, theirs, sizes):
  """Each of torchvision's TOP best results per image has one of ours with its category, its score (within the
  2e-3 of the model parity test) and a box of IoU > 0.9, whose mask, at the source size, overlaps torchvision's."""
  mask_ious = []
  for image_id, size in enumerate(sizes, start=1):
    pick = lambda results, key: [r for r in results[key] if r["image_id"] == image_id]
    our_boxes, our_masks = pick(ours, "bbox"), pick(ours, "segm")
    assert all(list(m["segmentation"]["size"]) == list(size) for m in our_masks)
    boxes, masks = pick(theirs, "bbox"), pick(theirs, "segm")
    for k in np.argsort([-r["score"] for r in boxes], kind="stable")[:TOP]:
      candidates = [j for j, r in enumerate(our_boxes)
                    if r["category_id"] == boxes[k]["category_id"] and abs(r["score"] - boxes[k]["score"]) < 2e-3]
      assert candidates, (image_id, boxes[k])
      box_iou = mask_util.iou([our_boxes[j]["bbox"] for j in candidates], [boxes[k]["bbox"]], [0])[:, 0]
      best = candidates[int(np.argmax(box_iou))]
      assert box_iou.max() > 0.9, (image_id, boxes[k], our_boxes[best])
      mask_ious.append(mask_util.iou([our_masks[best]["segmentation"]], [masks[k]["segmentation"]], [0])[0, 0])
  # torchvision pastes each mask over its box expanded by 30/28 and truncated to whole pixels; a corner within
  # float error of an integer moves the window by a pixel, and a random mask head's masks carry a texture of a
  # few pixels' period, so a few masks of the same box overlap less (one of 30 at IoU 0.76, a window one row off).
  assert np.mean(np.array(mask_ious) > 0.9) >= 0.9 and min(mask_ious) > 0.5, mask_ious


def _write_folder(root, images, detections):
  """A COCO-format folder (train2017 = val2017) whose instances are torchvision's best detection of each of the
  first categories it finds in each image, under their COCO category ids (a non-contiguous subset of 1..90)."""
  annotations, categories = [], set()
  for image_id, detection in enumerate(detections, start=1):
    found = set()
    for k in range(len(detection["scores"])):
      binary = detection["masks"][k, 0] > 0.5
      if binary.sum() < 4 or int(detection["labels"][k]) in found:
        continue
      found.add(int(detection["labels"][k]))
      rle = mask_util.encode(np.asfortranarray(binary.astype(np.uint8)))
      rle["counts"] = rle["counts"].decode("ascii")
      category = int(detection["labels"][k])
      categories.add(category)
      annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                          "segmentation": rle, "area": float(binary.sum()), "iscrowd": 0,
                          "bbox": [float(v) for v in mask_util.toBbox(rle)]})
      if sum(a["image_id"] == image_id for a in annotations) == GROUND_TRUTH_PER_IMAGE:
        break
  os.makedirs(os.path.join(root, "annotations"))
  for split in ("train2017", "val2017"):
    os.makedirs(os.path.join(root, split))
    entries = []
    for image_id, image in enumerate(images, start=1):
      name = f"{image_id:012d}.png"
      Image.fromarray(image).save(os.path.join(root, split, name))
      entries.append({"id": image_id, "file_name": name, "height": image.shape[0], "width": image.shape[1]})
    content = {"images": entries, "annotations": annotations,
               "categories": [{"id": c, "name": f"category{c}", "supercategory": "thing"} for c in sorted(categories)]}
    with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as f:
      json.dump(content, f)
  return sorted(categories)


@pytest.mark.slow  # two ResNet-50 Mask R-CNNs (torchvision's, and segjax's compile)
def test_converted_mask_rcnn_gets_the_ap_of_torchvisions_own_detections(tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  from test_models_mask_rcnn import _random_torch_model  # pylint: disable=g-import-not-at-top
  from segjax.weights import torchvision as tv_weights  # pylint: disable=g-import-not-at-top

  model = _random_torch_model("maskrcnn_resnet50_fpn")
  model.transform.min_size, model.transform.max_size = (96,), 128
  images = _images()
  inputs = [torch.from_numpy(i / 255.0).float().permute(2, 0, 1) for i in images]
  _detect_several_categories(model, inputs)
  resize = _round_resized_images(model)
  reference = _detect(model, inputs)
  root = str(tmp_path / "coco")
  categories = _write_folder(root, images, reference)
  assert len(categories) >= 3 and max(categories) > len(categories)  # COCO ids, not contiguous labels

  config = tiny_config(root, **{"dataset.name": "coco", "dataset.image_size": (96, 128), "batch_size": 3})
  config.model, variables = tv_weights.convert("maskrcnn_resnet50_fpn",
                                               {k: v.numpy() for k, v in model.state_dict().items()})
  info = pipeline.dataset_info(config)
  model_lib = models.get_model(config.model.name)
  module = model_lib.build(config.model, info)
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  workdir = tmp_path / "workdir"
  evaluator = InstanceEvaluator(info, str(workdir))
  eval_step = make_eval_step(module, model_lib, config.model, evaluator, mesh, mesh_lib.replicated(mesh))
  metrics = loop.evaluate(eval_step, variables, config, evaluator, mesh,
                          set(model_lib.BATCH_KEYS) | {"valid_image"}, model_lib.TASK)

  ground_truth = coco.load_ground_truth(info.eval_instances_json)
  expected, results = _coco_metrics(ground_truth, reference, categories)
  assert expected["box_AP"] > 0.5 and expected["mask_AP"] > 0.5  # the comparison has something to compare
  ours = {t: json.loads((workdir / f"coco_results_{t}.json").read_text()) for t in ("bbox", "segm")}
  _assert_results_contain(ours, results, SOURCES)

  # A random model's ~80 detections per image have scores a few 1e-4 apart, so float rounding reorders some of
  # them (and flips NMS decisions between thin boxes) over 9 ground-truth instances: the AP moves. The tolerance
  # is how far torchvision's own AP moves when its input moves by half a grey level (float, unrounded resize).
  model.transform.resize = resize
  unrounded, _ = _coco_metrics(ground_truth, _detect(model, inputs), categories)
  tolerance = max(0.01, max(abs(unrounded[k] - expected[k]) for k in AP_NAMES))
  for name in AP_NAMES:
    assert metrics[name] == pytest.approx(expected[name], abs=tolerance), (name, tolerance)
