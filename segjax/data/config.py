"""Default `config.dataset` for the input pipelines (ml_collections)."""
import ml_collections

# Where each file of a split lives, relative to `root`; `{split}` is the split name. COCO 2017 layout.
COCO_LAYOUT = {
    "images": "{split}",
    "instances": "annotations/instances_{split}.json",
    "panoptic_json": "annotations/panoptic_{split}.json",
    "panoptic_dir": "annotations/panoptic_{split}",
    "semantic_dir": "semantic_{split}",
}
# Depth maps (uint16 PNG, millimetres, named as the images), read with config.dataset.depth; apart from the layout, so
# that the folders without depth keep their TFDS builds.
DEPTH_DIR = "depth_{split}"


def default_dataset_config() -> ml_collections.ConfigDict:
  """The embedded synthetic set at 128x128; set name and root for another data set."""
  config = ml_collections.ConfigDict()
  # "synthetic" (written on first use) | "coco" (any COCO-format folder) | "cvppp" | "cityscapes_instances" | "voc" |
  # "cityscapes" | "ade20k" | "camvid" | "isbi_cells" (their official layouts: segjax/data/*.py).
  config.name = "synthetic"
  config.root = "~/.cache/segjax/synthetic"  # the data set's folder
  config.sbd_root = "~/data/benchmark_RELEASE"  # SBD, read by name "voc" for its split "train_aug"
  config.data_dir = "~/.cache/segjax/tfds"  # where the TFDS copy is built, once
  config.layout = ml_collections.ConfigDict(COCO_LAYOUT)
  config.train_split = "train2017"
  config.eval_split = "val2017"
  config.image_size = (128, 128)  # (H, W) of every batch; also the synthetic images' size
  config.max_instances = 16
  config.num_workers = 0  # threads decoding and augmenting examples; 0: segjax.data.tf_env.THREADS
  # translate, exposure, saturation: box-only detection sets only (YOLO's augmentation, augment_detection.py).
  # hue: a random hue rotation of the training images by up to this fraction of the colour circle (augment.py).
  config.augment = ml_collections.ConfigDict({"scale_range": (0.8, 1.25), "flip": True, "hue": 0.0, "translate": 0.0,
                                             "exposure": 1.0, "saturation": 1.0})
  # U-Net's loss weight map (Ronneberger et al. 2015, Eq. 2) in train batches as "pixel_weights", from the instance
  # ids of a set that stores them (isbi_cells): w0 and sigma (pixels of the source image) as the paper's Sec. 3.
  config.unet_weight_map = False
  config.unet_w0 = 10.0
  config.unet_sigma = 5.0
  # Read the set as box-only detection data (tfds_detection.py): "voc" from its devkit XML (splits like
  # "2007_test", "0712_trainval"), "synthetic" / "coco" from the instances JSON.
  config.detection = False
  # Detection sets: this many proposals per image for Fast R-CNN; 0: none. From the files proposal_files names for
  # a split ({split: (path, ...)}, VOC only: Fast R-CNN's selective-search .mat or scripts/selective_search.py's
  # .npz, segjax/data/proposal_files.py), else the stand-in of segjax/data/proposals.py.
  config.num_proposals = 0
  config.proposal_files = ml_collections.ConfigDict()
  # Instance sets: this many region proposals (masks) per image for SDS; 0: none. From the MCG candidate files
  # (one <image stem>.mat per image: MCG's own or scripts/region_candidates.py's, segjax/data/region_candidate_files.py)
  # in the directory region_proposal_dirs names for a split ({split: directory}, relative: in root), else the
  # stand-in of segjax/data/region_proposals.py.
  config.num_region_proposals = 0
  config.region_proposal_dirs = ml_collections.ConfigDict()
  config.num_train = 1000  # synthetic only
  config.num_val = 200  # synthetic only
  # Synthetic only: the shape classes ("circle", "square", "triangle", "star") the train / val images draw; empty: all.
  # Disjoint lists give the unseen-object protocol (segment held-out shapes class-agnostically); use another root.
  config.train_shapes = ()
  config.val_shapes = ()
  # RGB-D: read each image's depth map (DEPTH_DIR, uint16 millimetres; the synthetic set then writes them) into the
  # batches as "depth" with the camera's "intrinsics" (segjax/data/pipeline.py); COCO-format folders only.
  config.depth = False
  config.intrinsics = ()  # (fx, fy, cx, cy) of the source images in pixels; empty: the synthetic camera's
  return config
