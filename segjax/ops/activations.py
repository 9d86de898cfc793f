"""Activations whose gradients read their outputs, so that a training step keeps what the next layer keeps anyway.

`relu`'s derivative is taken from its output (y > 0, which holds exactly where x > 0), as torch's ReLU backward
(threshold_backward on the result): the backward pass then needs the activation, which the following convolution
or dense layer keeps for its weight gradient, and not the pre-activation. jax.nn.relu differentiates through its
input, so XLA keeps the pre-activation, or the convolution outputs it recomputes it from (a residual block's
convolution, its normalisation and shortcut sum), alive through the backward pass beside the activation.
It is written as a select of the input, not max(x, 0): XLA's fusion duplicates an elementwise producer into each of
its consumers when that reads no more than one full-size operand, which max(x, 0) (x and a broadcast zero) does,
so XLA:CPU would recompute the output in the backward pass from the pre-activation's inputs, keeping those alive
again; a select reads its mask and x, and is computed once.
Values (up to the sign of zero) and gradients are jax.nn.relu's, the gradient 0 at x = 0 as there.
"""
import jax
import jax.numpy as jnp


@jax.custom_jvp
def relu(x):
  """max(x, 0); its derivative is 1 where the output is positive, else 0."""
  return jnp.where(x < 0, 0, x)


@relu.defjvp
def _relu_jvp(primals, tangents):
  y = relu(primals[0])
  return y, jnp.where(y > 0, tangents[0], jnp.zeros_like(tangents[0]))
