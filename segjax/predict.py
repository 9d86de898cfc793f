"""Predictions of a trained or converted model on image files: pictures plus machine-readable results.

  python -m segjax.predict --workdir=DIR [--step=N] --output=OUT IMAGE_OR_FOLDER...
  python -m segjax.predict --config=CONFIG --weights=DIR [--image_size H W] --output=OUT IMAGE_OR_FOLDER...

--workdir reads a training run (its config.json and checkpoint, through `segjax.load`); --config takes an experiment
config (experiments/NAME.py, or a workdir's config.json) or a model config (the config.json that
scripts/convert_weights.py writes), --weights a scripts/convert_weights.py output folder (or its variables/). A folder
argument stands for its .png / .jpg / .jpeg files. Images keep their ids 1.. in argument order. Writes into OUT:

  NAME.png                       the picture: masks or label map over the image, with class names and scores
  semantic: NAME_labels.png      the label map (train ids, 255 ignore) at the image's size
  instance, panoptic:            coco_results_bbox.json, coco_results_segm.json (COCO results) and images.json
                                 (the images and categories, a COCO file that pycocotools' loadRes reads them with)
  panoptic: panoptic.json + panoptic/NAME.png   COCO panoptic predictions (segment ids as R + 256 G + 256^2 B)
"""
import argparse
import importlib.util
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_collections  # pylint: disable=g-import-not-at-top
import numpy as np
from PIL import Image

from segjax import visualize
from segjax.evaluation import coco, panoptic_io
from segjax.inference import Predictor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_paths(arguments) -> list[str]:
  """Files as given, folders as their image files (sorted); a missing path is an error naming it."""
  paths = []
  for argument in arguments:
    if os.path.isdir(argument):
      found = sorted(os.path.join(argument, f) for f in os.listdir(argument) if f.lower().endswith(IMAGE_SUFFIXES))
      if not found:
        raise ValueError(f"{argument}: a folder with no {'/'.join(IMAGE_SUFFIXES)} files")
      paths += found
    elif os.path.isfile(argument):
      paths.append(argument)
    else:
      raise ValueError(f"{argument}: no such file or folder")
  names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ValueError(f"images with the same name would overwrite each other's results: {repeated}")
  return paths


def read_image(path) -> np.ndarray:
  """RGB uint8 [H, W, 3] of an image file; an unreadable one is an error naming it."""
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB"))
  except (OSError, ValueError, SyntaxError) as error:
    raise ValueError(f"{path}: cannot read it as an image ({error})") from None


def load_config(path) -> ml_collections.ConfigDict:
  """An experiment config file (get_config()) or a JSON config (a workdir's or a converter's)."""
  if not os.path.isfile(path):
    raise ValueError(f"--config {path}: no such file")
  if path.endswith(".json"):
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  spec = importlib.util.spec_from_file_location("segjax_predict_config", path)
  module = importlib.util.module_from_spec(spec)
  sys.path.insert(0, os.getcwd())  # experiments import each other as `experiments.NAME`
  spec.loader.exec_module(module)
  return module.get_config()


def load_model(args):
  """(config, variables) from --workdir, or from --config and --weights."""
  if args.workdir:
    import segjax  # pylint: disable=g-import-not-at-top
    if not hasattr(segjax, "load"):
      raise ValueError("--workdir needs segjax.load; pass --config and --weights instead")
    return segjax.load(args.workdir, step=args.step)
  from segjax.train import pretrained  # pylint: disable=g-import-not-at-top
  config = load_config(args.config)
  if not os.path.isdir(args.weights):
    raise ValueError(f"--weights {args.weights}: no such folder")
  return config, pretrained.load_variables(args.weights)


def _categories(predictor):
  """The COCO categories list of the model's data set (or of its labels' category ids)."""
  info = predictor.info
  if info is not None and getattr(info, "categories", None):
    return [{"id": int(c.id), "name": c.name, "supercategory": getattr(c, "supercategory", ""),
             "isthing": int(c.isthing)} for c in info.categories]
  ids = predictor.thing_category_ids or tuple(range(1, int(predictor.model_config.get("num_classes") or 1)))
  return [{"id": int(i), "name": f"category {i}", "supercategory": "", "isthing": 1} for i in ids]


def write_predictions(predictor, paths, output, score_threshold=0.5) -> list[str]:
  """Runs `predictor` on the image files one at a time and writes the pictures and results; returns the files."""
  os.makedirs(output, exist_ok=True)
  written, detections, panoptic_files, entries = [], [], [], []
  names = predictor.class_names
  categories = _categories(predictor)
  category_names = {c["id"]: c["name"] for c in categories}
  ids = predictor.thing_category_ids
  label_to_category_id = {k + 1: int(c) for k, c in enumerate(ids)} if ids else None
  for image_id, path in enumerate(paths, start=1):
    image = read_image(path)
    name = os.path.splitext(os.path.basename(path))[0]
    entries.append({"id": image_id, "file_name": os.path.basename(path), "height": image.shape[0],
                    "width": image.shape[1]})
    (result,) = predictor([image])
    pixels = image.astype(np.float32) / 255.0
    if predictor.task == "semantic":
      picture = visualize.semantic_picture(pixels, result["labels"], names)
      labels_path = os.path.join(output, f"{name}_labels.png")
      Image.fromarray(np.clip(result["labels"], 0, 255).astype(np.uint8)).save(labels_path)
      written.append(labels_path)
    else:
      if label_to_category_id is None:
        label_to_category_id = {int(l): int(l) for l in range(1, 1 + int(predictor.model_config.num_classes))}
      detections.append({"image_id": image_id, **{k: result[k] for k in ("boxes", "scores", "labels", "masks")}})
      if predictor.task == "panoptic":
        picture = visualize.panoptic_picture(pixels, result["panoptic"], result["segments_info"], category_names)
        panoptic_files.append((image_id, f"{name}.png", result["panoptic"], result["segments_info"]))
      else:
        picture = visualize.instance_picture(pixels, result["boxes"], result["labels"], result["scores"],
                                             result["masks"], names, score_threshold)
    picture_path = os.path.join(output, f"{name}.png")
    Image.fromarray(picture).save(picture_path)
    written.append(picture_path)
  if predictor.task != "semantic":
    for iou_type in ("bbox", "segm"):
      results_path = os.path.join(output, f"coco_results_{iou_type}.json")
      with open(results_path, "w") as f:
        json.dump(coco.coco_results(detections, label_to_category_id, iou_type), f)
      written.append(results_path)
    images_path = os.path.join(output, "images.json")
    with open(images_path, "w") as f:
      json.dump({"images": entries, "annotations": [], "categories": categories}, f)
    written.append(images_path)
  if predictor.task == "panoptic":
    json_path, _ = panoptic_io.save_panoptic_predictions(output, "panoptic.json", panoptic_files, categories)
    written.append(json_path)
  return written


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...) or folders of them")
  parser.add_argument("--workdir", help="a training run's workdir (config.json and checkpoints/)")
  parser.add_argument("--step", type=int, default=None, help="with --workdir: the checkpoint step (default: last)")
  parser.add_argument("--config", help="an experiment config (.py or .json) or a converter's config.json")
  parser.add_argument("--weights", help="with --config: a scripts/convert_weights.py output folder")
  parser.add_argument("--output", required=True, help="the folder to write pictures and results into")
  parser.add_argument("--image_size", type=int, nargs=2, metavar=("H", "W"),
                      help="the size images are fitted into (default: an experiment config's dataset.image_size, "
                           "else each image's own size)")
  parser.add_argument("--score_threshold", type=float, default=0.5, help="detections drawn in the pictures")
  args = parser.parse_args(argv)
  if bool(args.workdir) == bool(args.config) or bool(args.config) != bool(args.weights):
    parser.error("pass either --workdir, or --config and --weights")
  try:
    paths = image_paths(args.images)
    config, variables = load_model(args)
    predictor = Predictor(config, variables, image_size=args.image_size)
    written = write_predictions(predictor, paths, args.output, args.score_threshold)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  print(f"{len(paths)} images -> {len(written)} files in {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
