"""Input pipelines: host-local, fixed-shape numpy batches with exact resume.

The train stream is a pure function of (config.seed, position): epoch e visits the examples in
the permutation seeded by (seed, e); global step s holds stream positions [s B, (s + 1) B), and
host p of P takes the p-th contiguous chunk of B / P of them. Each example's augmentation is
seeded by (seed, epoch, example index). So `make_train_iterator(config, start_step=k)` yields
exactly what the iterator from step 0 yields after k batches, without reading those k batches.

Examples are decoded, resized and augmented by `config.dataset.num_workers` threads (default: half the
cores, at most 8; TensorFlow releases the GIL), several batches ahead, and assembled in stream order.

Batch dict (B = config.batch_size // process_count, M = config.dataset.max_instances, (H, W) =
config.dataset.image_size), all numpy, compact as it crosses to the devices (compact.py; `compact.expand`
gives the model batch: image float32 in [0, 1], semantic int32, masks uint8 [B, M, H, W]):
  image uint8 [B, H, W, 3]                  semantic uint8 [B, H, W] (255 ignore)
  boxes float32 [B, M, 4] (x1, y1, x2, y2)  classes int32 [B, M] thing labels 1..K (0 padding)
  masks_packed uint8 [B, k, H, ceil(W / 8)] slots 0..k-1 bit-packed along W, k = compact.bucket
  is_crowd bool [B, M]                      instance_valid bool [B, M]
  image_id int32 [B] (-1 padding)           valid_image bool [B]
  orig_size int32 [B, 2] source (h, w)      scale float32 [B] resize factor source -> batch
With config.dataset.depth (COCO-format folders with depth maps: config.DEPTH_DIR; the synthetic set writes them):
  depth uint16 [B, H, W] millimetres, 0 none (float32 metres in the model batch)
  intrinsics float32 [B, 4] (fx, fy, cx, cy) of the batch's pixels: config.dataset.intrinsics (the source camera's;
  empty: the synthetic camera, synthetic.intrinsics) moved with each example's resize, flip and crop
With config.dataset.unet_weight_map, train batches for a model that reads them (U-Net) also hold
  pixel_weights float32 [B, H, W]: U-Net's weight map (Eq. 2, w0 = config.dataset.unet_w0, sigma =
  config.dataset.unet_sigma) of each example's instances (augment.finish_labels), 0 on padding.
With config.dataset.num_region_proposals = P on an instance set, SDS's region candidates: the first P of each
image's MCG candidate file where config.dataset.region_proposal_dirs names a directory for the split
(region_candidate_files.py: the superpixel map moved as the instance masks, the masks built from it), else the
stand-in of region_proposals.py; invalid empty ones pad an image's:
  region_masks_packed uint8 [B, P, H, ceil(W / 8)] (the model batch's region_masks uint8 [B, P, H, W])
  region_valid bool [B, P]
"""
import collections
import concurrent.futures
import functools
import itertools
import os
import weakref

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from segjax.data import ade20k
from segjax.data import augment
from segjax.data import augment_detection
from segjax.data import camvid
from segjax.data import cityscapes
from segjax.data import cityscapes_instances
from segjax.data import coco
from segjax.data import compact
from segjax.data import cvppp
from segjax.data import info as info_lib
from segjax.data import isbi_cells
from segjax.data import proposal_files
from segjax.data import region_candidate_files
from segjax.data import region_proposals
from segjax.data import semantic
from segjax.data import synthetic
from segjax.data import tfds_coco
from segjax.data import tfds_detection
from segjax.data import voc
from segjax.data import voc_detection
from segjax.data.tf_env import THREADS
from segjax.data.tf_env import tf


def _layout(config):
  if config.dataset.name in CONVERTED:  # written by their to_coco in the COCO 2017 layout
    return {}
  layout = config.dataset.get("layout")
  return layout.to_dict() if hasattr(layout, "to_dict") else dict(layout or {})


SEMANTIC_READERS = {reader.name: reader for reader in (voc.READER, cityscapes.READER, ade20k.READER, camvid.READER,
                                                       isbi_cells.READER)}
# Instance sets read from their own layout through a COCO folder written once (to_coco, coco_folder).
CONVERTED = {"cvppp": cvppp, "cityscapes_instances": cityscapes_instances}
NAMES = ("synthetic", "coco", *CONVERTED, *SEMANTIC_READERS)


def _coco_root(config):
  """The COCO-format folder read for config.dataset: its root, or the one CVPPP / Cityscapes is converted into."""
  ds = config.dataset
  return CONVERTED[ds.name].coco_folder(ds) if ds.name in CONVERTED else ds.root


def _synthetic_args(ds):
  """ensure_synthetic's arguments from config.dataset (the shape classes of each split: the unseen-object split)."""
  return dict(num_train=ds.num_train, num_val=ds.num_val, image_size=tuple(ds.image_size),
              train_shapes=tuple(ds.get("train_shapes", ())), val_shapes=tuple(ds.get("val_shapes", ())),
              depth=bool(ds.get("depth", False)))


def _intrinsics(ds):
  """The source camera's (fx, fy, cx, cy) for a set read with depth: config.dataset.intrinsics, else the synthetic
  camera at the written image size."""
  if ds.get("intrinsics"):
    if len(ds.intrinsics) != 4:
      raise ValueError(f"config.dataset.intrinsics: (fx, fy, cx, cy) in pixels; got {tuple(ds.intrinsics)}")
    return tuple(float(v) for v in ds.intrinsics)
  if ds.name != "synthetic":
    raise ValueError(f"config.dataset.depth: data set {ds.name!r} needs config.dataset.intrinsics (fx, fy, cx, cy)")
  return synthetic.intrinsics(*ds.image_size)


def prepare(config) -> tfds_coco.CocoFolder | semantic.SemanticFolder | tfds_detection.DetectionFolder:
  """The TFDS builder of config.dataset, written (synthetic) and built on first use only.

  With config.dataset.detection, a box-only detection set: "voc" reads the devkit's detection layout
  (voc_detection.py), "synthetic" and "coco" their instances JSON (tfds_detection.py).
  """
  ds = config.dataset
  if ds.get("detection"):
    if ds.name not in ("voc", "synthetic", "coco"):
      raise ValueError(f"config.dataset.detection: data set {ds.name!r} has no boxes; use voc, synthetic or coco")
    if ds.name == "synthetic":
      synthetic.ensure_synthetic(ds.root, **_synthetic_args(ds))
    return tfds_detection.prepare("voc" if ds.name == "voc" else "coco", ds.root, (ds.train_split, ds.eval_split),
                                  ds.data_dir, _layout(config))
  if ds.name in SEMANTIC_READERS:
    return semantic.prepare(SEMANTIC_READERS[ds.name], ds)
  if ds.name == "synthetic":
    synthetic.ensure_synthetic(ds.root, **_synthetic_args(ds))
  elif ds.name in CONVERTED:
    CONVERTED[ds.name].to_coco(ds.root, (ds.train_split, ds.eval_split), _coco_root(config))
  elif ds.name != "coco":
    raise ValueError(f"config.dataset.name must be one of {', '.join(map(repr, NAMES))}; got {ds.name!r}")
  if ds.get("depth") and ds.name not in ("synthetic", "coco"):
    raise ValueError(f"config.dataset.depth: read from COCO-format folders (synthetic, coco); got {ds.name!r}")
  return tfds_coco.prepare(_coco_root(config), (ds.train_split, ds.eval_split), ds.data_dir, _layout(config),
                           bool(ds.get("depth", False)))


def dataset_info(config) -> info_lib.DatasetInfo:
  """Classes, contiguous-id maps, split sizes and eval annotation paths of config.dataset."""
  ds = config.dataset
  builder = prepare(config)
  splits = builder.info.splits
  if ds.get("detection"):  # boxes only: every category is a thing, no instances or panoptic files
    return info_lib.make_info(
        ds.name, [coco.Category(**c) for c in builder.info.metadata["categories"]],
        num_train=splits[ds.train_split].num_examples, num_eval=splits[ds.eval_split].num_examples,
        image_size=ds.image_size, eval_paths=None, has_instances=False, has_panoptic=False)
  if ds.name in SEMANTIC_READERS:  # semantic labels only: no thing classes, instances or panoptic files
    return info_lib.make_info(
        ds.name, SEMANTIC_READERS[ds.name].categories(), num_train=splits[ds.train_split].num_examples,
        num_eval=splits[ds.eval_split].num_examples, image_size=ds.image_size, eval_paths=None,
        has_instances=False, has_panoptic=False)
  meta = builder.info.metadata
  return info_lib.make_info(
      ds.name, [coco.Category(**c) for c in meta["categories"]],
      num_train=splits[ds.train_split].num_examples,
      num_eval=splits[ds.eval_split].num_examples,
      image_size=ds.image_size,
      eval_paths=coco.split_paths(_coco_root(config), ds.eval_split, _layout(config)),
      has_instances=meta[ds.eval_split]["has_instances"],
      has_panoptic=meta[ds.eval_split]["has_panoptic"])


def _local_batch(config, process_index, process_count):
  batch = config.batch_size
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")
  if batch < process_count or batch % process_count:
    raise ValueError(f"config.batch_size={batch} must be a positive multiple of "
                     f"process_count={process_count}")
  return batch // process_count


def _example_seed(seed, epoch, index):
  """Stateless seed [2] of one example's augmentation, from (seed, epoch, example index)."""
  return np.random.SeedSequence([seed, epoch, index]).generate_state(2).astype(np.int64)


def _train_source(records, seed, batch, local_batch, process_index):
  """step -> (records [b], seeds [b, 2], valid [b]) of this host's chunk of global step `step`."""
  n = len(records)

  @functools.lru_cache(maxsize=2)
  def permutation(epoch):  # the visiting order of epoch `epoch`
    return np.random.default_rng([seed, epoch]).permutation(n)

  def source(step):
    positions = step * batch + process_index * local_batch + np.arange(local_batch)
    epochs, offsets = np.divmod(positions, n)
    indices = [int(permutation(int(e))[o]) for e, o in zip(epochs, offsets)]
    seeds = np.stack([_example_seed(seed, int(e), i) for e, i in zip(epochs, indices)])
    return records.__getitems__(indices), seeds, np.ones(local_batch, bool)

  return source


def _eval_source(records, batch, local_batch, process_index):
  """step -> this host's chunk of eval batch `step`; positions past the end are padding."""
  n = len(records)

  def source(step):
    positions = step * batch + process_index * local_batch + np.arange(local_batch)
    valid = positions < n
    raws = records.__getitems__(np.where(valid, positions, 0).tolist())
    return raws, np.zeros((local_batch, 2), np.int64), valid

  return source


INSTANCE_KEYS = frozenset({"boxes", "classes", "masks", "is_crowd", "instance_valid"})


def _labels(keys):
  """The label kinds ("semantic", "instances", "pixel_weights") that model batch `keys` read; all for None."""
  if keys is None:
    return ("semantic", "instances", "pixel_weights")
  return tuple(kind for kind, wanted in (("semantic", {"semantic"}), ("instances", INSTANCE_KEYS),
                                         ("pixel_weights", {"pixel_weights"}))
               if wanted & set(keys))


@functools.lru_cache(maxsize=16)
def _example_processor(features, image_size, max_instances, train, augment_kwargs, labels=("semantic", "instances")):
  """tf.function (record, seed [2], valid) -> one example's arrays (augment.preprocess; for a box-only detection set
  augment_detection.preprocess, YOLO's augmentation).

  Only the label kinds in `labels` are decoded: a semantic model's batches skip the instance masks and an instance
  model's the semantic map (their PNG decoding and resampling are most of an example's work). Cached, so a new
  iterator over the same dataset and shapes does not trace again.
  """
  kwargs = dict(image_size=image_size, max_instances=max_instances, train=train, **dict(augment_kwargs))
  detection = "objects" in features
  preprocess = augment_detection.preprocess if detection else augment.preprocess
  instance_ids = "pixel_weights" in labels and "instance_ids" in features  # U-Net's weight map, from the instances
  skip = [k for k in ("panoptic", "semantic") if k in features and k not in labels]
  skip += ["instance_ids"] if "instance_ids" in features and not instance_ids else []
  decoders = {k: tfds.decode.SkipDecoding() for k in skip} or None
  if not detection:
    kwargs["semantic"] = "semantic" in labels
    kwargs["instance_ids"] = instance_ids

  @tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([2], tf.int64),
                                tf.TensorSpec([], tf.bool)])
  def process(raw, seed, valid):
    example = features.deserialize_example(raw, decoders=decoders)
    if not detection and ("instances" not in example or "instances" not in labels):  # a semantic-only data set
      example["instances"] = {"label": tf.zeros([0], tf.int32), "is_crowd": tf.zeros([0], tf.bool),  # or model
                              "mask": tf.zeros([0], tf.string)}
    return preprocess(example, seed, valid, **kwargs)

  return process


def _proposal_files(config, split):
  """The split's proposals from config.dataset.proposal_files (segjax/data/proposal_files.py), or None where it names
  no files for the split."""
  ds = config.dataset
  files = (ds.get("proposal_files") or {}).get(split)
  if not files:
    return None
  if ds.name != "voc" or not ds.get("num_proposals"):
    raise ValueError(f"config.dataset.proposal_files: proposals are indexed by the position in a VOC split's list; "
                     f"set dataset.name 'voc' (got {ds.name!r}) and dataset.num_proposals (got "
                     f"{ds.get('num_proposals')})")
  names = [e.name for e in voc_detection.examples(ds.root, split)]
  return proposal_files.SplitProposals(tuple(files), ds.num_proposals, names)


def _with_proposals(process, proposals, image_size, raw, seed, valid):
  """`process`, then the row's proposals from files, moved as its boxes were (the row's box_transform)."""
  example = dict(process(raw, seed, valid))
  transform = np.asarray(example.pop("box_transform"))
  example["proposals"], example["proposal_valid"] = proposals.for_image(int(example["image_id"]), transform,
                                                                         image_size)
  return example


def _run(process, max_instances, width, weight_map, regions, raw, seed, valid):
  """A worker's job: one example's batch row. Holds no reference to the iterator, so that can be freed. `regions`:
  None, or (finished row, source rows, source columns, width) -> the row's SDS region candidates."""
  example = {k: np.asarray(v) for k, v in process(tf.constant(raw), seed, valid).items()}  # views: .numpy() copies
  if "mask_rle" not in example:  # a box-only detection example: the image crosses as uint8 like the others
    example["image"] = np.round(255 * np.clip(example["image"], 0, 1)).astype(np.uint8)
    return example
  rows, columns = example["mask_source_rows"], example["mask_columns"]
  example = augment.finish_labels(example, max_instances, width, weight_map)
  if regions is not None:
    example.update(regions(example, rows, columns, width))
  return example


def _region_proposals(count, example, rows, columns, width):
  """SDS's region proposals of a finished row: `count` stand-in masks (segjax/data/region_proposals.py) around its
  non-crowd instances, bit-packed along W as the instance masks ("region_masks_packed", "region_valid")."""
  del rows, columns  # drawn on the finished row's masks
  masks = np.unpackbits(example["masks_packed"], axis=-1, count=width)
  n = len(masks)
  keep = example["instance_valid"][:n] & ~example["is_crowd"][:n]
  proposals, valid = region_proposals.region_proposals(masks, keep, example["image"].shape[:2], count,
                                                       int(example["image_id"]))
  return {"region_masks_packed": np.packbits(proposals, axis=-1),
          "region_valid": valid & bool(example["valid_image"])}


def _region_candidates(config, split):
  """The row -> SDS region candidates function of `split`: its MCG candidate files where
  config.dataset.region_proposal_dirs names a directory for it (region_candidate_files.py), else the stand-in
  (region_proposals.py) with config.dataset.num_region_proposals, else None."""
  ds = config.dataset
  count = 0 if ds.get("detection") else int(ds.get("num_region_proposals") or 0)
  directory = (ds.get("region_proposal_dirs") or {}).get(split)
  if directory:
    if not count or ds.name in SEMANTIC_READERS:
      raise ValueError(f"config.dataset.region_proposal_dirs: SDS's region candidates of an instance set; set "
                       f"dataset.num_region_proposals (got {ds.get('num_region_proposals')}) on a COCO-format set "
                       f"(got {ds.name!r}{', detection' if ds.get('detection') else ''})")
    names = coco.image_file_names(_coco_root(config), split, _layout(config))
    directory = os.path.join(os.path.expanduser(ds.root), os.path.expanduser(directory))  # relative: in the root
    return region_candidate_files.SplitCandidates(directory, count, names).for_example
  return functools.partial(_region_proposals, count) if count else None


def _assemble(examples):
  """Per-example dicts -> one batch dict, packed masks stacked to the batch's bucket."""
  batch = {k: np.stack([e[k] for e in examples]) for k in examples[0] if k != "masks_packed"}
  if "masks_packed" in examples[0]:
    batch["masks_packed"] = compact.stack_packed([e["masks_packed"] for e in examples], batch["instance_valid"])
  return batch


class _Batches:
  """Iterator over the batches of `steps`: each example of a step is one job for a pool of `workers` threads,
  submitted `depth` batches ahead; batches come out in stream order.

  TensorFlow never calls back into Python here (unlike tf.data.Dataset.from_generator, whose
  iterator can deadlock on the GIL when destroyed mid-stream, e.g. at interpreter exit). Logs
  the running count of instances dropped beyond max_instances.
  """

  def __init__(self, source, process, steps, max_instances, width, workers, depth, weight_map=None,
               regions=None):
    self._source, self._process, self._steps = source, process, iter(steps)
    self._width, self._weight_map, self._regions = width, weight_map, regions
    self._max_instances = max_instances
    self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="segjax_data")
    self._close = weakref.finalize(self, self._pool.shutdown, wait=True, cancel_futures=True)
    self._pending = collections.deque()
    self._submit(depth)
    self._dropped = self._dropped_images = 0

  def _submit(self, count):
    for step in itertools.islice(self._steps, count):
      raws, seeds, valid = self._source(step)
      self._pending.append([self._pool.submit(_run, self._process, self._max_instances, self._width,
                                              self._weight_map, self._regions, *args)
                            for args in zip(raws, seeds, valid)])

  def __iter__(self):
    return self

  def __next__(self):
    if not self._pending:
      self._close()
      raise StopIteration
    batch = _assemble([future.result() for future in self._pending.popleft()])
    self._submit(1)
    per_image = batch.pop("num_dropped")
    if per_image.any():
      self._dropped += int(per_image.sum())
      self._dropped_images += int((per_image > 0).sum())
      logging.log_every_n_seconds(
          logging.WARNING, "dropped %d instances beyond max_instances=%d in %d images so far",
          60, self._dropped, self._max_instances, self._dropped_images)
    return batch


def _batches(builder, source, steps, config, local_batch, train, split, keys=None):
  """Numpy batches of `steps`: records from `source` (of `split`), processed by TensorFlow on worker threads; with
  `keys` (model batch keys), only the labels these read."""
  ds = config.dataset
  augment_kwargs = {"scale_range": tuple(ds.augment.scale_range), "flip": bool(ds.augment.flip)}
  proposals = None
  if ds.get("detection"):  # YOLO's translation and HSV jitter (augment_detection.py)
    augment_kwargs.update({k: float(ds.augment.get(k, 1.0 if k != "translate" else 0.0))
                           for k in ("translate", "exposure", "saturation")})
    proposals = _proposal_files(config, split)
    if proposals is not None:  # Fast R-CNN's external proposals, read from files
      augment_kwargs["box_transform"] = True
    elif ds.get("num_proposals"):  # or the stand-in (segjax/data/proposals.py)
      augment_kwargs["num_proposals"] = int(ds.num_proposals)
  if "depth" in builder.info.features:
    augment_kwargs["intrinsics"] = _intrinsics(ds)
  if ds.augment.get("hue"):
    if ds.get("detection"):
      raise ValueError("config.dataset.augment.hue: instance and semantic sets only (detection sets: saturation)")
    augment_kwargs["hue"] = float(ds.augment.hue)
  labels = _labels(keys)
  weight_map = None
  if ds.get("unet_weight_map") and train and "pixel_weights" in labels:  # U-Net's loss weights (training only)
    if "instance_ids" not in builder.info.features:
      raise ValueError(f"config.dataset.unet_weight_map needs instance id maps; data set {ds.name!r} stores none "
                       f"(isbi_cells does)")
    weight_map = (float(ds.unet_w0), float(ds.unet_sigma))
  else:
    labels = tuple(kind for kind in labels if kind != "pixel_weights")
  process = _example_processor(builder.info.features, tuple(ds.image_size), ds.max_instances, train,
                               tuple(sorted(augment_kwargs.items())), labels)
  if proposals is not None:
    process = functools.partial(_with_proposals, process, proposals, tuple(ds.image_size))
  workers = ds.get("num_workers") or THREADS
  depth = 2 + -(-2 * workers // local_batch)  # enough examples queued to keep every worker busy
  regions = _region_candidates(config, split)  # SDS's region candidates
  return _Batches(source, process, steps, ds.max_instances, ds.image_size[1], workers, depth, weight_map, regions)


def _records(builder, split):
  return builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)


def make_train_iterator(config, *, start_step=0, process_index=0, process_count=1, keys=None):
  """Endless iterator of this host's train batches (see the module docstring), from `start_step`.

  `keys`: the model batch keys the caller reads (a model's BATCH_KEYS); labels no key reads are neither decoded nor
  in the batch (no "semantic" for an instance model, no instance masks for a semantic one). None: all.
  """
  if config.seed < 0 or start_step < 0:
    raise ValueError(f"config.seed={config.seed} and start_step={start_step} must be >= 0")
  local_batch = _local_batch(config, process_index, process_count)
  builder = prepare(config)
  records = _records(builder, config.dataset.train_split)
  if len(records) == 0:
    raise coco.DatasetError(f"train split '{config.dataset.train_split}' of "
                            f"{config.dataset.root} has no examples")
  source = _train_source(records, config.seed, config.batch_size, local_batch, process_index)
  return _batches(builder, source, itertools.count(start_step), config, local_batch, train=True,
                  split=config.dataset.train_split, keys=keys)


def make_eval_iterator(config, split=None, *, process_index=0, process_count=1):
  """This host's eval batches: every example of `split` (default eval_split) once, unaugmented.

  Every host yields ceil(N / config.batch_size) batches; rows past the end are padding with
  valid_image False (image 0, semantic 255, no instances, image_id -1).
  """
  local_batch = _local_batch(config, process_index, process_count)
  builder = prepare(config)
  records = _records(builder, split or config.dataset.eval_split)
  source = _eval_source(records, config.batch_size, local_batch, process_index)
  steps = range(-(-len(records) // config.batch_size))
  return _batches(builder, source, steps, config, local_batch, train=False, split=split or config.dataset.eval_split)
