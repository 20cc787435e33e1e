"""edgeinc: Inception-v3 and its low-resolution variants, from a training recipe to the edge device."""

__version__ = "0.1.0"

from .models import create_model, list_models  # noqa: E402

__all__ = ["__version__", "create_model", "list_models"]
