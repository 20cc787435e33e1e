"""The detector's second stage: patches cut around proposed boxes (R-CNN's warp with context), COCO
detection files, the training patches of a COCO split, the patch classifier on any runner, proposals
(sliding windows, selective search, the user's own boxes), and detection end to end with COCO mAP.

Boxes follow torchvision.ops: float ``[N, 4]`` ``(x1, y1, x2, y2)`` in pixels, image sizes ``(height, width)``.
"""

from .coco import (
    CocoAnnotation,
    CocoCategory,
    CocoDataset,
    CocoFormatError,
    CocoImage,
    PatchBoxes,
    PatchesInfo,
    class_folder,
    extract_patches,
    parse_coco,
    read_coco,
    sample_patch_boxes,
)
from .classifier import (
    DEFAULT_BATCH_SIZE,
    PatchClassifier,
    PatchPreprocessing,
    PatchResult,
    PatchScorer,
    eval_transform,
    preprocess_patches,
)
from .crops import (
    DEFAULT_CONTEXT,
    INCEPTION_MEAN,
    ROI_ALIGN_MAX_TOLERANCE,
    ROI_ALIGN_MEAN_TOLERANCE,
    ROI_ALIGN_P999_TOLERANCE,
    as_boxes,
    batch_slices,
    check_boxes,
    check_context,
    context_regions,
    crop_patches,
    mean_fill,
    roi_align_patches,
)
from .evaluate import CocoMetrics, coco_evaluate
from .pipeline import (
    DetectResult,
    ImageDetections,
    detect,
    draw_detections,
    score_boxes,
    select_detections,
    suppress_inside,
)
from .proposals import (
    PROPOSAL_METHODS,
    ProposalError,
    ProposalFile,
    SlidingWindows,
    read_proposals,
    selective_search,
    sliding_windows,
)

__all__ = [
    "DEFAULT_BATCH_SIZE", "PROPOSAL_METHODS", "CocoMetrics", "DetectResult", "ImageDetections", "PatchClassifier",
    "PatchPreprocessing", "PatchResult", "PatchScorer", "ProposalError", "ProposalFile", "SlidingWindows",
    "coco_evaluate", "detect", "draw_detections", "eval_transform", "preprocess_patches", "read_proposals",
    "score_boxes", "select_detections", "selective_search", "sliding_windows", "suppress_inside",
    "DEFAULT_CONTEXT", "INCEPTION_MEAN", "ROI_ALIGN_MAX_TOLERANCE", "ROI_ALIGN_MEAN_TOLERANCE", "ROI_ALIGN_P999_TOLERANCE",
    "CocoAnnotation", "CocoCategory", "CocoDataset", "CocoFormatError", "CocoImage", "PatchBoxes", "PatchesInfo",
    "as_boxes", "batch_slices", "check_boxes", "check_context", "class_folder", "context_regions", "crop_patches",
    "extract_patches", "mean_fill", "parse_coco", "read_coco", "roi_align_patches", "sample_patch_boxes",
]
