from .complexity import count_macs, count_parameters
from .factory import MODELS, create_model, get_variant, list_models, resolve_variant
from .inception_v3 import InceptionOutputs, InceptionV3, StemSpec, VariantConfig
from .source import ModelSource, load_source, resolve_weights_path
from .weights import CheckpointError, load_checkpoint, load_weights, read_state_dict, save_weights

__all__ = [
    "MODELS", "CheckpointError", "ModelSource", "load_source", "resolve_weights_path", "InceptionOutputs", "InceptionV3", "StemSpec", "VariantConfig",
    "count_macs", "count_parameters", "create_model", "get_variant", "list_models", "resolve_variant",
    "load_checkpoint", "load_weights", "read_state_dict", "save_weights",
]
