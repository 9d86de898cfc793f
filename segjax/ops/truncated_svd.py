"""Truncated SVD of a fully connected layer (Fast R-CNN, Girshick 2015, Sec. 3.1, Eq. 5).

A layer y = x K + b with kernel K [in, out] (K = W^T of the paper's W [out, in]) is replaced by two layers without
a nonlinearity between them: x (V_t Sigma_t) with no bias, then (.) U_t^T + b, where W = U Sigma V^T and t keeps the
largest singular values. Parameters drop from in * out to t * (in + out); by Eckart-Young, K_t is the best rank-t
approximation and an input's error is the norm of its projection onto the discarded singular directions, each
scaled by its singular value.
"""
import numpy as np


def factor_kernel(kernel, rank):
  """kernel [in, out] -> (first [in, t], second [t, out]) with first @ second the rank-t truncation of kernel.

  Computed in float64 NumPy (an offline conversion); returned in the kernel's dtype. rank 0 or >= min(in, out) keeps
  every singular value (the product then equals kernel up to rounding).
  """
  k = np.asarray(kernel, np.float64)
  rank = min(rank or min(k.shape), min(k.shape))
  # K = W^T = V Sigma U^T: NumPy's left factor of K is the paper's V, its right factor the paper's U^T.
  v, sigma, u_t = np.linalg.svd(k, full_matrices=False)
  dtype = np.asarray(kernel).dtype
  return (v[:, :rank] * sigma[:rank]).astype(dtype), u_t[:rank].astype(dtype)
