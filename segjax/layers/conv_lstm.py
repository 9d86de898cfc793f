"""A convolutional LSTM (Shi et al. 2015) run over a fixed number of steps, as the recurrent instance models use it.

Each cell computes its i, g, f, o gates as a convolution of its input plus one of its hidden state, the forget
gate's bias offset by +1 (Jozefowicz et al. 2015), as flax's `nn.ConvLSTMCell`:

  c_t = sigmoid(f + 1) * c_{t-1} + sigmoid(i) * tanh(g),   h_t = sigmoid(o) * tanh(c_t).

`ConvLSTM` runs a stack of cells over `num_steps` steps of the same input map from a zero state, parameters shared
across steps. The first layer's input is the same at every step, so its input convolution is computed once, before
the steps. The steps are unrolled: XLA:CPU runs convolutions inside a while loop far slower than at top level, and
the step counts here are small.

With `global_context`, the first layer's gates also receive a linear map of the spatial max of the top layer's
previous hidden state (zero at the first step), the same at every position: a 3 x 3 recurrence alone carries
information a few cells per step, while a model that emits one object per step must decide over the whole map which
one is next.
"""
import flax.linen as nn
import jax.numpy as jnp

from segjax.layers.conv import Conv


class ConvLSTMCell(nn.Module):
  """One cell given its input's share of the gates [..., 4 features]: carry (c, h) -> ((c, h), h)."""
  features: int
  kernel_size: tuple = (3, 3)

  @nn.compact
  def __call__(self, carry, input_gates):
    c, h = carry
    gates = input_gates + Conv(4 * self.features, self.kernel_size, name="hh")(h)
    i, g, f, o = jnp.split(gates, 4, axis=-1)
    c = nn.sigmoid(f + 1) * c + nn.sigmoid(i) * jnp.tanh(g)
    h = nn.sigmoid(o) * jnp.tanh(c)
    return (c, h), h


class ConvLSTMStack(nn.Module):
  """One step of `num_layers` stacked cells from the first layer's input gates: carry is a tuple of (c, h) per
  layer."""
  features: int
  num_layers: int = 1
  kernel_size: tuple = (3, 3)
  global_context: bool = False

  @nn.compact
  def __call__(self, carry, input_gates):
    if self.global_context:
      context = nn.Dense(4 * self.features, use_bias=False, name="global")(carry[-1][1].max(axis=(-3, -2)))
      input_gates = input_gates + context[..., None, None, :]
    new_carry = []
    for i, layer_carry in enumerate(carry):
      if i:
        input_gates = Conv(4 * self.features, self.kernel_size, name=f"ih{i}")(x)
      layer_carry, x = ConvLSTMCell(self.features, self.kernel_size, name=f"cell{i}")(layer_carry, input_gates)
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
  global_context: bool = False

  @nn.compact
  def __call__(self, x):
    input_gates = Conv(4 * self.features, self.kernel_size, name="ih0")(x)  # the same at every step
    zeros = jnp.zeros(x.shape[:-1] + (self.features,), input_gates.dtype)
    carry = tuple((zeros, zeros) for _ in range(self.num_layers))
    scan = nn.scan(ConvLSTMStack, variable_broadcast="params", split_rngs={"params": False},
                   in_axes=nn.broadcast, out_axes=1, length=self.num_steps, unroll=self.num_steps)
    _, hidden = scan(self.features, self.num_layers, self.kernel_size, self.global_context,
                     name="stack")(carry, input_gates)
    return hidden
