"""Datasets: synthetic writer, COCO-format TFDS builder, tf.data input pipelines."""
