"""Category bookkeeping: contiguous ids and the `DatasetInfo` the training loop reads.

Semantic train ids are 0..L-1 over all categories in category-id order (detectron2's COCO panoptic
convention), 255 = ignore. Thing labels are 1..K over thing categories in category-id order, 0 =
background / padding (torchvision detection convention).
"""
import dataclasses
from collections.abc import Mapping, Sequence

from segjax.constants import IGNORE_LABEL
from segjax.data import coco


def category_to_semantic(categories: Sequence[coco.Category]) -> dict[int, int]:
  """COCO category id -> semantic train id 0..L-1."""
  ids = sorted(c.id for c in categories)
  if len(ids) >= IGNORE_LABEL:
    raise ValueError(f"categories: {len(ids)} categories do not fit uint8 train ids below {IGNORE_LABEL}")
  return {cid: k for k, cid in enumerate(ids)}


def category_to_thing_label(categories: Sequence[coco.Category]) -> dict[int, int]:
  """COCO thing category id -> thing label 1..K."""
  return {cid: k + 1 for k, cid in enumerate(sorted(c.id for c in categories if c.isthing))}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model and an evaluator need to know about a prepared dataset."""
  name: str
  categories: tuple[coco.Category, ...]  # sorted by id
  num_semantic_classes: int  # L
  semantic_class_names: tuple[str, ...]  # [L], by train id
  semantic_category_ids: tuple[int, ...]  # [L], train id -> COCO category id
  num_thing_classes: int  # K
  thing_class_names: tuple[str, ...]  # [K], thing label k -> thing_class_names[k - 1]
  thing_category_ids: tuple[int, ...]  # [K], thing label k -> thing_category_ids[k - 1]
  stuff_category_ids: tuple[int, ...]
  category_to_semantic: Mapping[int, int]
  category_to_thing_label: Mapping[int, int]
  num_train: int
  num_eval: int
  image_size: tuple[int, int]  # (H, W) of every batch
  eval_instances_json: str | None  # None where the eval split has no such file
  eval_panoptic_json: str | None
  eval_panoptic_dir: str | None
  ignore_label: int = IGNORE_LABEL


def make_info(name, categories, *, num_train, num_eval, image_size, eval_paths, has_instances,
              has_panoptic) -> DatasetInfo:
  """Builds a `DatasetInfo` from the category list and split facts."""
  categories = tuple(sorted(categories, key=lambda c: c.id))
  things = tuple(c for c in categories if c.isthing)
  return DatasetInfo(
      name=name, categories=categories,
      num_semantic_classes=len(categories),
      semantic_class_names=tuple(c.name for c in categories),
      semantic_category_ids=tuple(c.id for c in categories),
      num_thing_classes=len(things),
      thing_class_names=tuple(c.name for c in things),
      thing_category_ids=tuple(c.id for c in things),
      stuff_category_ids=tuple(c.id for c in categories if not c.isthing),
      category_to_semantic=category_to_semantic(categories),
      category_to_thing_label=category_to_thing_label(categories),
      num_train=int(num_train), num_eval=int(num_eval),
      image_size=tuple(int(s) for s in image_size),
      eval_instances_json=eval_paths.instances if has_instances else None,
      eval_panoptic_json=eval_paths.panoptic_json if has_panoptic else None,
      eval_panoptic_dir=eval_paths.panoptic_dir if has_panoptic else None)
