"""U-Net: the paper's 572 -> 388 valid-padding shapes, parameter count from layer shapes, no recompile."""
import jax
import jax.numpy as jnp
import numpy as np

from segjax.models.unet import UNet


def _conv(cin, cout, k):
  return cin * cout * k * k + cout


def _reference_count(in_channels, num_classes, width=64):
  """Fig. 1 of the paper, counted layer by layer: two 3x3 convs per level, 2x2 up-convs, 1x1 scores."""
  count, cin = 0, in_channels
  for level in range(5):
    c = width * 2 ** level
    count += _conv(cin, c, 3) + _conv(c, c, 3)
    cin = c
  for level in reversed(range(4)):
    c = width * 2 ** level
    count += _conv(cin, c, 2) + _conv(2 * c, c, 3) + _conv(c, c, 3)
    cin = c
  return count + _conv(cin, num_classes, 1)


def test_paper_shapes_and_parameter_count():
  model = UNet(num_classes=2)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 572, 572, 1))))
  count = sum(x.size for x in jax.tree.leaves(variables))
  assert count == _reference_count(1, 2)
  assert abs(count / 1e6 - 31.03) < 0.01
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 572, 572, 1))), variables)
  assert out["logits"].shape == (1, 388, 388, 2)


def test_same_padding_no_recompile():
  model = UNet(num_classes=3, width=4, padding="same")
  images = jnp.zeros((2, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(0), images)
  traces = []

  @jax.jit
  def forward(v, x):
    traces.append(1)
    return model.apply(v, x)["logits"]

  out = forward(variables, images)
  out2 = forward(variables, jnp.ones_like(images))
  assert out.shape == (2, 32, 32, 3) and len(traces) == 1
  assert np.isfinite(np.asarray(out2)).all()
