"""The detector's second stage: patches cut around proposed boxes (R-CNN's warp with context), COCO
detection files, and the training patches of a COCO split.

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

__all__ = [
    "DEFAULT_CONTEXT", "INCEPTION_MEAN", "ROI_ALIGN_MAX_TOLERANCE", "ROI_ALIGN_MEAN_TOLERANCE", "ROI_ALIGN_P999_TOLERANCE",
    "CocoAnnotation", "CocoCategory", "CocoDataset", "CocoFormatError", "CocoImage", "PatchBoxes", "PatchesInfo",
    "as_boxes", "batch_slices", "check_boxes", "check_context", "class_folder", "context_regions", "crop_patches",
    "extract_patches", "mean_fill", "parse_coco", "read_coco", "roi_align_patches", "sample_patch_boxes",
]
