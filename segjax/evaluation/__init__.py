"""Evaluation: semantic confusion-matrix metrics, COCO AP, panoptic quality."""
