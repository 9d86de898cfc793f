"""R-FCN (segjax/models/rfcn.py) as an instance model, for COCO: TASK "instance", so the loop scores its boxes with
pycocotools (box_AP; each box is also reported filled as its mask, as Faster R-CNN here), and crowd regions are
read (`is_crowd`) and left out of training. Everything else is rfcn's: the same network, config, loss and
variables."""
from segjax.models.rfcn import INFERENCE_KEYS, SIZE_DIVISIBILITY, build, loss, model_config  # noqa: F401

TASK = "instance"
BATCH_KEYS = ("image", "boxes", "classes", "is_crowd", "instance_valid")
FORWARD_KEYS = ("boxes", "classes", "is_crowd", "instance_valid")


def predict(outputs, model_config):
  """rfcn's detections with their boxes filled as masks at input size [B, K, H, W] (the instance contract)."""
  del model_config
  return {k: outputs[k] for k in ("boxes", "scores", "labels", "masks", "valid")}
