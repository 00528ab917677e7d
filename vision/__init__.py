"""Image–text encoders for photo lookup and text→image search.

``create_encoder(name)`` builds one from the registry (``list_models()``): real CLIP checkpoints by name for
machines that can download them, and the offline default ``lite0-minilm-lit`` (packaged EfficientNet-Lite0 and
all-MiniLM-L6-v2 towers joined by projection heads that ``vision.align.align`` trains on a catalog).

Errors::

    KeyError
    └── UnknownModelError      unknown registry name (message lists the valid ones)
    RuntimeError
    └── MissingWeightsError    a packaged weights distribution is not installed
"""

from vision.cache import EmbeddingCache
from vision.encoder import ImageTextEncoder
from vision.registry import (
    DEFAULT_MODEL,
    ModelSpec,
    UnknownModelError,
    create_encoder,
    list_models,
    register_model,
)
from vision.towers import MissingWeightsError

__all__ = [
    "DEFAULT_MODEL",
    "EmbeddingCache",
    "ImageTextEncoder",
    "MissingWeightsError",
    "ModelSpec",
    "UnknownModelError",
    "create_encoder",
    "list_models",
    "register_model",
]
