from hetsearch.models.checkpoint import LoadedModel, ModelMeta, load_checkpoint, save_checkpoint
from hetsearch.models.embedding_model import EmbeddingModel, ModelSpec, create_model
from hetsearch.models.heads import HEAD_TYPES, CosineClassifier, EmbeddingHead
from hetsearch.models.registry import create_backbone, list_backbones, register_backbone
from hetsearch.models import backbones, cmpnas  # noqa: E402,F401  (register the built-in backbones)

__all__ = ["EmbeddingModel", "ModelSpec", "create_model", "CosineClassifier", "EmbeddingHead",
           "HEAD_TYPES", "LoadedModel", "ModelMeta", "load_checkpoint", "save_checkpoint",
           "create_backbone", "list_backbones", "register_backbone"]
