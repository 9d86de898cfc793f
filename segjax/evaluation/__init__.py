"""Evaluation: semantic confusion-matrix metrics, COCO AP (pycocotools), panoptic quality (panopticapi)."""
from segjax.evaluation.coco import coco_evaluate, save_coco_results
from segjax.evaluation.panoptic import pq_compute
from segjax.evaluation.pq_accumulator import PQAccumulator
from segjax.evaluation.semantic import SemanticEvaluator, confusion_matrix, semantic_metrics
