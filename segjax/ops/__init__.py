"""Pure jax.numpy operators: boxes, anchors, NMS, RoI pooling, adaptive pooling and resizing, max unpooling,
deformable convolution and PS RoI pooling, masks, losses, CRFs, image normalisation, linear sum assignment,
PointRend's point sampling, FCIS's joint mask and class scores and mask voting."""
from segjax.ops.anchors import anchor_grid, cell_anchors, fpn_anchors
from segjax.ops.assignment import linear_sum_assignment
from segjax.ops.crf import dense_crf, dense_gaussian_filter, permutohedral_filter
from segjax.ops.boxes import (box_area, box_convert, box_iou, clip_boxes, decode_boxes, encode_boxes,
                              generalized_box_iou)
from segjax.ops.deform_conv import deform_conv2d
from segjax.ops.deform_roi import deform_ps_roi_pool
from segjax.ops.fcis import joint_scores, mask_voting, voting_regions
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD, normalize_images
from segjax.ops.losses import dice_loss, sigmoid_focal_loss, smooth_l1_loss, softmax_cross_entropy
from segjax.ops.masks import box_masks, mask_iou, masks_to_boxes, paste_masks_in_image, roi_mask_targets
from segjax.ops.matching import hardest, match_boxes, sample_balanced
from segjax.ops.mask_nms import matrix_nms
from segjax.ops.soft_nms import soft_nms, soft_nms_boxes, soft_nms_masks
from segjax.ops.points import (point_sample, regular_grid_points, uncertain_points_on_grid,
                               uncertain_points_with_randomness)
from segjax.ops.pooling import adaptive_avg_pool2d, adaptive_max_pool2d, resize_align_corners, resize_bilinear
from segjax.ops.box_nms import batched_nms, nms
from segjax.ops.roi import (assign_fpn_levels, multilevel_roi_align, ps_roi_align, ps_roi_pool, roi_align,
                            roi_pool)
from segjax.ops.unpool import bed_of_nails_unpool, max_pool_with_argmax, max_unpool
