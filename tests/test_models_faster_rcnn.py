"""Faster R-CNN on box-only detection sets (segjax.models.faster_rcnn): the VGG-16 network of Ren et al. 2015
(conv5_3 trunk, RoI max pooling 7x7, fc6/fc7 with dropout) trains on boxes without masks or crowd flags, its
detections are scored by VOC AP, and its batch keys are the detection pipeline's."""
import types

import jax
import numpy as np
import optax
import pytest

from segjax.data import augment_detection
from segjax.evaluation import voc
from segjax.models import faster_rcnn, get_model
from train_util import counting_jit


def _tiny_config():
  config = faster_rcnn.model_config("vgg16")
  config.update({"width": 8, "representation_size": 64, "anchor_sizes": ((8, 16, 32, 64),),
                 "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100, "rpn_pre_nms_top_n_test": 100,
                 "rpn_post_nms_top_n_test": 50, "roi_batch_size_per_image": 32, "detections_per_image": 10})
  return config


def _batch(counts, size=64, m=4, seed=0):
  """Images with a bright square per object (class 1 yellow, 2 cyan) and their padded boxes."""
  rng = np.random.default_rng(seed)
  n = len(counts)
  image = rng.uniform(0, 0.2, (n, size, size, 3)).astype(np.float32)
  boxes, classes, valid = np.zeros((n, m, 4), np.float32), np.zeros((n, m), np.int32), np.zeros((n, m), bool)
  for b, count in enumerate(counts):
    for i in range(count):
      x, y = rng.integers(0, size - 24, 2)
      side = int(rng.integers(12, 24))
      label = int(rng.integers(1, 3))
      boxes[b, i], classes[b, i], valid[b, i] = (x, y, x + side, y + side), label, True
      image[b, y:y + side, x:x + side] = (0.9, 0.8, 0.1) if label == 1 else (0.1, 0.8, 0.9)
  return {"image": image, "boxes": boxes, "classes": classes, "instance_valid": valid}


def test_registered_with_the_detection_task_and_the_pipelines_keys():
  model_lib = get_model("faster_rcnn_detection")
  assert model_lib is faster_rcnn and model_lib.TASK == "detection"
  produced = set(augment_detection.output_signature((64, 64), 4))
  assert set(faster_rcnn.BATCH_KEYS) <= produced and set(faster_rcnn.FORWARD_KEYS) <= produced
  config = faster_rcnn.model_config("vgg16")
  assert (config.representation_size, config.roi_pooler, config.box_head_dropout) == (4096, "pool", 0.5)
  module = faster_rcnn.build(config, types.SimpleNamespace(num_thing_classes=20))
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 224, 224, 3),
                                                                                            np.float32))["params"]
  assert shapes["backbone"]["conv5_3"]["kernel"].shape == (3, 3, 512, 512) and "pool5" not in shapes["backbone"]
  assert shapes["box_head"]["fc6"]["kernel"].shape == (7 * 7 * 512, 4096)  # RoI pool 7x7 of conv5_3
  assert shapes["box_head"]["cls_score"]["kernel"].shape == (4096, 21)
  assert shapes["rpn_head"]["cls_logits"]["kernel"].shape[-1] == 9  # 3 sizes x 3 ratios


@pytest.mark.slow  # a VGG-16 trunk and two compiles
def test_tiny_vgg16_trains_on_boxes_and_is_scored_by_voc_ap():
  config = _tiny_config()
  module = faster_rcnn.build(config, types.SimpleNamespace(num_thing_classes=2))
  batch = _batch((3, 2))
  variables = module.init(jax.random.key(0), batch["image"], train=False)
  optimizer = optax.adam(2e-3)
  state = (variables["params"], optimizer.init(variables["params"]))

  @counting_jit
  def step(state, batch, key):
    params, opt_state = state
    sampling, dropout = jax.random.split(key)

    def loss_fn(params):
      outputs = module.apply({"params": params}, batch["image"], train=True, rngs={"sampling": sampling,
                                                                                 "dropout": dropout},
                             targets={k: batch[k] for k in faster_rcnn.FORWARD_KEYS})
      return faster_rcnn.loss(outputs, batch, config)

    (value, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return (optax.apply_updates(params, deltas), opt_state), value, metrics

  losses = []
  for i in range(15):
    state, value, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(value))
  assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
  assert float(metrics["num_positive_rois"]) > 0
  for counts in ((0, 0), (4, 4)):  # other box counts: the same program
    step(state, _batch(counts, seed=sum(counts)), jax.random.key(99))
  assert step.traces == 1

  predict = jax.jit(lambda p, x: faster_rcnn.predict(module.apply({"params": p}, x, train=False), config))
  out = jax.device_get(predict(state[0], batch["image"]))
  assert set(out) == {"boxes", "scores", "labels", "valid"} and out["boxes"].shape == (2, 10, 4)
  images = [voc.ImageDetections(out["boxes"][i][out["valid"][i]], out["scores"][i][out["valid"][i]],
                                out["labels"][i][out["valid"][i]], batch["boxes"][i][batch["instance_valid"][i]],
                                batch["classes"][i][batch["instance_valid"][i]],
                                np.zeros(batch["instance_valid"][i].sum(), bool)) for i in range(2)]
  metrics = voc.voc_metrics(images, ("yellow", "cyan"))
  assert {"voc_mAP", "voc07_mAP", "voc_AP/yellow", "voc_AP/cyan"} <= set(metrics)


def test_hierarchical_sampling_fractions_of_fast_rcnn():
  """Fast R-CNN's minibatch (Girshick 2015, Sec. 2.3): 64 RoIs per image, 25% foreground (IoU >= 0.5 with a
  ground-truth box), the rest background with a best IoU in [0.1, 0.5); RoIs below 0.1 are never drawn."""
  from segjax.models import roi_heads  # pylint: disable=g-import-not-at-top
  from segjax.ops.boxes import box_iou  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  gt = np.array([[20, 20, 60, 60], [100, 40, 160, 120], [0, 0, 0, 0]], np.float32)
  gt_valid = np.array([True, True, False])
  # Proposals: jittered copies of the boxes (many >= 0.5), shifted ones (0.1..0.5) and far ones (< 0.1).
  base = gt[rng.integers(0, 2, 600)]
  scale = rng.choice([2.0, 15.0, 80.0], 600)[:, None]
  proposals = np.clip(base + rng.normal(0, 1, (600, 4)) * scale, 0, 200).astype(np.float32)
  proposals[:, 2:] = np.maximum(proposals[:, 2:], proposals[:, :2] + 1)
  def sample(key, bg_iou_low):
    return jax.device_get(roi_heads.sample_rois(
        key, proposals, np.ones(600, bool), gt, jax.numpy.array([1, 2, 0]), gt_valid, fg_iou=0.5, bg_iou=0.5,
        num_samples=64, positive_fraction=0.25, bg_iou_low=bg_iou_low))

  sample = jax.jit(sample, static_argnums=1)
  for image in range(2):  # 2 images x 64 RoIs
    rois, labels, _, positive, valid = sample(jax.random.key(image), 0.1)
    best = np.asarray(box_iou(gt[gt_valid], rois)).max(0)
    assert valid.all() and positive.sum() == 16  # 25% of 64: the pool has more foreground than that
    assert (best[positive] >= 0.5).all() and (labels[positive] > 0).all()
    background = valid & ~positive
    assert background.sum() == 48 and (labels[background] == 0).all()
    assert ((best[background] >= 0.1) & (best[background] < 0.5)).all()
  rois, _, _, positive, valid = sample(jax.random.key(0), 0.0)
  best = np.asarray(box_iou(gt[gt_valid], rois)).max(0)
  assert (best[valid & ~positive] < 0.1).any()  # without the lower bound, far background is drawn too
