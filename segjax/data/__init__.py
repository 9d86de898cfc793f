"""Datasets: synthetic writer, COCO-format TFDS builder, deterministic input pipelines."""
from segjax.data.coco import DatasetError
from segjax.data.pipeline import dataset_info, make_eval_iterator, make_train_iterator, prepare
from segjax.data.synthetic import ensure_synthetic, write_dataset
