"""Pure jax.numpy operators: boxes, anchors, NMS, RoI pooling, masks, losses."""
