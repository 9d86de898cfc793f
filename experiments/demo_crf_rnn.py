"""CRF-as-RNN on the demo's narrow ResNet-18 FCN-8s, fine-tuned end to end on the synthetic data.

  python -m segjax.main --config=experiments/demo.py --workdir=workdirs/demo
  python -m segjax.main --config=experiments/demo_crf_rnn.py --workdir=workdirs/demo_crf_rnn \
      --config.init_from=workdirs/demo/checkpoints/1200/state

Not a paper row: Zheng et al. 2015's recipe in small (a trained FCN-8s gives the unaries; a CRF-RNN layer of 5
mean-field iterations in training, 10 at test, with the authors' kernel bandwidths and initial weights; the whole
network fine-tuned end to end) on 2 CPU cores. The base is experiments/demo.py's model, so its checkpoint loads
into `base`. Target: a higher mIoU than the FCN-8s it starts from, in under 10 minutes. End-to-end training lets the
unaries adapt to the CRF: the fine-tuned network's own unaries (`unary_logits`) are scored beside the CRF's output.
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
