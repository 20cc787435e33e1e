"""Data: ImageNet-layout folders, Inception preprocessing (CPU or on the GPU), the synthetic patch task and
synthetic detection scenes (COCO format)."""

from .baseline import colour_histogram_baseline, colour_histograms
from .folder import (
    IMAGE_EXTENSIONS,
    BadImageError,
    DataError,
    ImageFolder,
    collate_skip_bad,
    find_split,
    load_rgb,
    to_rgb,
)
from .claim import claim_folder
from .scenes import SceneObject, ScenesInfo, render_scene, synthesize_scenes
from .synth import BACKGROUND, SHAPE_NAMES, SynthInfo, render_patch, synthesize_patch_task
from .transforms import TRAIN_RATIO, TRAIN_SCALE, CentralFractionCrop, build_transform, gpu_decode_batch

__all__ = [
    "BACKGROUND", "IMAGE_EXTENSIONS", "SHAPE_NAMES", "TRAIN_RATIO", "TRAIN_SCALE",
    "BadImageError", "CentralFractionCrop", "DataError", "ImageFolder", "SceneObject", "ScenesInfo", "SynthInfo",
    "build_transform", "claim_folder", "collate_skip_bad", "colour_histogram_baseline", "colour_histograms",
    "find_split", "gpu_decode_batch", "load_rgb", "render_patch", "render_scene", "synthesize_patch_task",
    "synthesize_scenes", "to_rgb",
]
