from hetsearch.models.checkpoint import LoadedModel, ModelMeta, load_checkpoint, save_checkpoint
from hetsearch.models.embedding_model import EmbeddingModel, ModelSpec, create_model
from hetsearch.models.heads import HEADS, CosineClassifier, EmbeddingHead, register_head
from hetsearch.models.registry import BACKBONES, create_backbone, list_backbones, register_backbone
from hetsearch.models import backbones, cmpnas  # noqa: E402,F401  (register the built-in backbones)

__all__ = ["EmbeddingModel", "ModelSpec", "create_model", "CosineClassifier", "EmbeddingHead",
           "HEADS", "register_head", "LoadedModel", "ModelMeta", "load_checkpoint", "save_checkpoint",
           "BACKBONES", "create_backbone", "list_backbones", "register_backbone"]
