"""A convolutional LSTM (Shi et al. 2015) run over a fixed number of steps, as the recurrent instance models use it.

The cell is flax's `nn.ConvLSTMCell` (i, g, f, o gates from one convolution of the input and one of the hidden
state; the forget gate's bias offset by +1, Jozefowicz et al. 2015). `ConvLSTM` scans a stack of cells with
`nn.scan` over `num_steps` steps of the same input map, parameters shared across steps. The scan is unrolled:
XLA:CPU runs convolutions inside a while loop far slower than at top level, and the step counts here are small.
"""
import flax.linen as nn
import jax.numpy as jnp


class ConvLSTMStack(nn.Module):
  """One step of `num_layers` stacked ConvLSTM cells: carry is a tuple of (c, h) per layer."""
  features: int
  num_layers: int = 1
  kernel_size: tuple = (3, 3)

  @nn.compact
  def __call__(self, carry, x):
    new_carry = []
    for i, layer_carry in enumerate(carry):
      layer_carry, x = nn.ConvLSTMCell(self.features, self.kernel_size, name=f"cell{i}")(layer_carry, x)
      new_carry.append(layer_carry)
    return tuple(new_carry), x


class ConvLSTM(nn.Module):
  """`ConvLSTMStack` over `num_steps` steps of a constant input x [B, H, W, C] from a zero state.

  Returns the top layer's hidden states [B, T, H, W, features].
  """
  features: int
  num_steps: int
  num_layers: int = 1
  kernel_size: tuple = (3, 3)

  @nn.compact
  def __call__(self, x):
    zeros = jnp.zeros(x.shape[:-1] + (self.features,), x.dtype)
    carry = tuple((zeros, zeros) for _ in range(self.num_layers))
    scan = nn.scan(ConvLSTMStack, variable_broadcast="params", split_rngs={"params": False},
                   in_axes=nn.broadcast, out_axes=1, length=self.num_steps, unroll=self.num_steps)
    _, hidden = scan(self.features, self.num_layers, self.kernel_size, name="stack")(carry, x)
    return hidden
