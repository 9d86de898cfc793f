"""Fully connected CRFs (Krähenbühl & Koltun 2011): exact dense Gaussian filtering and mean-field inference."""
from segjax.ops.crf.dense import dense_crf, dense_gaussian_filter
