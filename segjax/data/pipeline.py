"""tf.data input pipelines: host-local, fixed-shape numpy batches with exact resume.

The train stream is a pure function of (config.seed, position): epoch e visits the examples in
the permutation seeded by (seed, e); global step s holds stream positions [s B, (s + 1) B), and
host p of P takes the p-th contiguous chunk of B / P of them. Each example's augmentation is
seeded by (seed, epoch, example index). So `make_train_iterator(config, start_step=k)` yields
exactly what the iterator from step 0 yields after k batches, without reading those k batches.

Batch dict (B = config.batch_size // process_count, M = config.dataset.max_instances, (H, W) =
config.dataset.image_size), all numpy:
  image float32 [B, H, W, 3] in [0, 1]      semantic int32 [B, H, W] (255 ignore)
  boxes float32 [B, M, 4] (x1, y1, x2, y2)  classes int32 [B, M] thing labels 1..K (0 padding)
  masks uint8 [B, M, H, W]                  is_crowd bool [B, M]     instance_valid bool [B, M]
  image_id int32 [B] (-1 padding)           valid_image bool [B]
  orig_size int32 [B, 2] source (h, w)      scale float32 [B] resize factor source -> batch
"""
import functools
import os

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from segjax.data import augment
from segjax.data import coco
from segjax.data import info as info_lib
from segjax.data import synthetic
from segjax.data import tfds_coco
from segjax.data.tf_env import tf

# tf.data threads: a small private pool so that input work leaves the cores to JAX.
_THREADS = max(1, min(8, (os.cpu_count() or 2) // 2))


def _layout(config):
  layout = config.dataset.get("layout")
  return layout.to_dict() if hasattr(layout, "to_dict") else dict(layout or {})


def prepare(config) -> tfds_coco.CocoFolder:
  """The TFDS builder of config.dataset, written (synthetic) and built on first use only."""
  ds = config.dataset
  if ds.name == "synthetic":
    synthetic.ensure_synthetic(ds.root, num_train=ds.num_train, num_val=ds.num_val,
                               image_size=tuple(ds.image_size))
  elif ds.name != "coco":
    raise ValueError(f"config.dataset.name must be 'synthetic' or 'coco', got {ds.name!r}")
  return tfds_coco.prepare(ds.root, (ds.train_split, ds.eval_split), ds.data_dir, _layout(config))


def dataset_info(config) -> info_lib.DatasetInfo:
  """Classes, contiguous-id maps, split sizes and eval annotation paths of config.dataset."""
  ds = config.dataset
  builder = prepare(config)
  meta = builder.info.metadata
  return info_lib.make_info(
      ds.name, [coco.Category(**c) for c in meta["categories"]],
      num_train=builder.info.splits[ds.train_split].num_examples,
      num_eval=builder.info.splits[ds.eval_split].num_examples,
      image_size=ds.image_size,
      eval_paths=coco.split_paths(ds.root, ds.eval_split, _layout(config)),
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


def _train_elements(records, seed, start_step, batch, local_batch, process_index):
  """Generator of this host's (record, seed, valid) in stream order from `start_step`."""
  n = len(records)

  @functools.lru_cache(maxsize=2)
  def permutation(epoch):  # the visiting order of epoch `epoch`
    return np.random.default_rng([seed, epoch]).permutation(n)

  step = start_step
  while True:
    positions = step * batch + process_index * local_batch + np.arange(local_batch)
    epochs, offsets = np.divmod(positions, n)
    indices = [int(permutation(int(e))[o]) for e, o in zip(epochs, offsets)]
    for raw, epoch, index in zip(records.__getitems__(indices), epochs, indices):
      yield {"record": raw, "seed": _example_seed(seed, int(epoch), index), "valid": True}
    step += 1


def _eval_elements(records, batch, local_batch, process_index):
  """Generator of this host's chunk of each eval batch; positions past the end are padding."""
  n = len(records)
  for step in range(-(-n // batch)):
    positions = step * batch + process_index * local_batch + np.arange(local_batch)
    valid = positions < n
    raws = records.__getitems__(np.where(valid, positions, 0).tolist())
    for raw, is_valid in zip(raws, valid):
      yield {"record": raw, "seed": np.zeros(2, np.int64), "valid": bool(is_valid)}


def _batches(builder, elements, config, local_batch, train):
  """tf.data: decode + preprocess each element, batch, prefetch -> numpy batches."""
  ds_config = config.dataset
  features = builder.info.features
  dataset = tf.data.Dataset.from_generator(
      lambda: elements,
      output_signature={"record": tf.TensorSpec((), tf.string),
                        "seed": tf.TensorSpec((2,), tf.int64),
                        "valid": tf.TensorSpec((), tf.bool)})
  augment_config = ds_config.augment

  def process(element):
    example = features.deserialize_example(element["record"])
    return augment.preprocess(
        example, element["seed"], element["valid"], image_size=tuple(ds_config.image_size),
        max_instances=ds_config.max_instances, train=train,
        scale_range=tuple(augment_config.scale_range), flip=bool(augment_config.flip))

  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = _THREADS
  options.threading.max_intra_op_parallelism = 1
  dataset = (dataset.map(process, num_parallel_calls=_THREADS, deterministic=True)
             .batch(local_batch, drop_remainder=True)
             .prefetch(2)
             .with_options(options))
  return _count_dropped(dataset.as_numpy_iterator(), ds_config.max_instances)


def _count_dropped(batches, max_instances):
  """Yields the batches without `num_dropped`, logging the running count of dropped instances."""
  dropped = images = 0
  for batch in batches:
    per_image = batch.pop("num_dropped")
    if per_image.any():
      dropped += int(per_image.sum())
      images += int((per_image > 0).sum())
      logging.log_every_n_seconds(
          logging.WARNING, "dropped %d instances beyond max_instances=%d in %d images so far",
          60, dropped, max_instances, images)
    yield batch


def _records(builder, split):
  return builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)


def make_train_iterator(config, *, start_step=0, process_index=0, process_count=1):
  """Endless iterator of this host's train batches (see the module docstring), from `start_step`."""
  if config.seed < 0 or start_step < 0:
    raise ValueError(f"config.seed={config.seed} and start_step={start_step} must be >= 0")
  local_batch = _local_batch(config, process_index, process_count)
  builder = prepare(config)
  records = _records(builder, config.dataset.train_split)
  if len(records) == 0:
    raise coco.DatasetError(f"train split '{config.dataset.train_split}' of "
                            f"{config.dataset.root} has no examples")
  elements = _train_elements(records, config.seed, start_step, config.batch_size, local_batch,
                             process_index)
  return _batches(builder, elements, config, local_batch, train=True)


def make_eval_iterator(config, split=None, *, process_index=0, process_count=1):
  """This host's eval batches: every example of `split` (default eval_split) once, unaugmented.

  Every host yields ceil(N / config.batch_size) batches; rows past the end are padding with
  valid_image False (image 0, semantic 255, no instances, image_id -1).
  """
  local_batch = _local_batch(config, process_index, process_count)
  builder = prepare(config)
  records = _records(builder, split or config.dataset.eval_split)
  elements = _eval_elements(records, config.batch_size, local_batch, process_index)
  return _batches(builder, elements, config, local_batch, train=False)
