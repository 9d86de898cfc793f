"""segjax: semantic, instance and panoptic segmentation in JAX/Flax."""
