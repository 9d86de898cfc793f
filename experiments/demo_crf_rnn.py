"""CRF-as-RNN on the demo's narrow ResNet-18 FCN-8s, fine-tuned end to end on the synthetic data.

  python -m segjax.main --config=experiments/demo.py --workdir=workdirs/demo
  python -m segjax.main --config=experiments/demo_crf_rnn.py --workdir=workdirs/demo_crf_rnn \
      --config.init_from=workdirs/demo/checkpoints/1200/state

Not a paper row: Zheng et al. 2015's recipe in small (a trained FCN-8s gives the unaries; a CRF-RNN layer of 5
mean-field iterations in training, 10 at test, with the authors' kernel bandwidths and initial weights; the whole
network fine-tuned end to end) on 2 CPU cores. The base is experiments/demo.py's model, so its checkpoint loads
into `base`. Target: a higher mIoU than the FCN-8s it starts from, in under 10 minutes on an idle machine.
Measured here (2-core CPU): from the demo FCN-8s's step-1200 checkpoint (eval mIoU 0.920), 200 steps gave eval mIoU
0.994 (pixel_acc 0.999, mean_acc 0.996, fwIoU 0.998) on the 200 validation images, crf_overflow 0 throughout; the
fine-tuned network's own unaries (unary_logits) score 0.890 on the same images: the unaries adapted to the CRF, as
end-to-end training lets them. Measured without the ImageNet input normalisation the base now applies; not
re-measured since.
"""
import ml_collections

from segjax.config import base_config


def get_config():
  config = base_config()
  config.batch_size = 8
  config.total_steps = 200
  config.log_every_steps = 20
  config.eval_every_steps = 200
  config.checkpoint_every_steps = 200
  config.model = ml_collections.ConfigDict({
      "name": "crf_rnn",
      "base": {"name": "fcn", "backbone": "resnet", "depth": 18, "width": 32, "output_stride": 32,
               "skips": ("C4", "C3"), "dtype": "float32"},  # experiments/demo.py's model
      "crf": {"train_iterations": 5, "test_iterations": 10}})
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 5e-4
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 20
  return config
