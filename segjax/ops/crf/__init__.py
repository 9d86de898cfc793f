"""Fully connected CRFs (Krähenbühl & Koltun 2011): mean-field inference with the permutohedral lattice
(Adams, Baek & Davis 2010) or the exact dense Gaussian filter."""
from segjax.ops.crf.dense import crf_messages, dense_crf, dense_crf_defaults, dense_gaussian_filter
from segjax.ops.crf.permutohedral import Lattice, apply_lattice, build_lattice, permutohedral_filter
