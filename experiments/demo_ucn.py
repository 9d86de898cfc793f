"""The Unseen Clustering Network (Xiang et al. 2020) on the synthetic data's unseen-object split: a width-16 U-Net
trained from scratch on circles and squares, evaluated on images of triangles and stars only (shapes it never saw),
class-agnostic.

  python -m segjax.main --config=experiments/demo_ucn.py --workdir=workdirs/demo_ucn

Not a paper row: a smoke-sized run of the unseen-object protocol (segjax/data/synthetic.py, dataset.train_shapes /
val_shapes) through the whole pipeline: spherical embeddings, the intra / inter cluster losses, von Mises-Fisher mean
shift, and the held-out shapes scored by class-agnostic mask AP and the OCID / OSD overlap precision / recall /
F-measure (segjax/evaluation/overlap.py). RGB only: the synthetic writer draws no depth, so the RGB-D variant is not
built. Target: overlap_F >= 0.6 on the held-out shapes.
"""
import ml_collections

from experiments import demo


def get_config():
  config = demo.get_config()  # demo.py's batch, logging and AdamW recipe
  config.total_steps = 1200
  config.eval_every_steps = 600
  config.checkpoint_every_steps = 600
  config.model = ml_collections.ConfigDict({
      "name": "ucn", "width": 16, "embedding_dim": 8, "dtype": "float32",
      # Loss (Xiang et al. 2020): intra margin alpha, inter margin delta, the authors' term weights.
      "alpha": 0.02, "delta": 0.5, "lambda_intra": 10.0, "lambda_inter": 10.0,
      # Inference: farthest-point seeds, von Mises-Fisher mean shift (kappa 20), modes merged within 0.4.
      "num_seeds": 32, "kappa": 20.0, "bandwidth": 0.4, "mean_shift_iterations": 10, "min_area": 16,
  })
  config.dataset = ml_collections.ConfigDict(dict(config.dataset))
  config.dataset.root = "~/.cache/segjax/synthetic_unseen"  # its own folder: the default set stays as it is
  config.dataset.train_shapes = ("circle", "square")
  config.dataset.val_shapes = ("triangle", "star")
  return config
