"""The frozen gallery model a query model is trained against.

Every compatibility method needs something from the gallery checkpoint: BCT its classifier (and,
for new classes, its embeddings), L2 regression and distillation its embeddings. `FrozenGallery`
loads the checkpoint once, switches every parameter off (no gradient, eval-mode BatchNorm, never
handed to an optimizer) and checks that the query model can be compared with it at all.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hetsearch.errors import CompatibilityError, ConfigError
from hetsearch.models import EmbeddingModel, LoadedModel, ModelMeta, ModelSpec, load_checkpoint
from hetsearch.models.contract import space_mismatch
from hetsearch.models.heads import DEFAULT_MARGINS


def resolved_margin(spec: ModelSpec) -> float:
    """The margin a head really uses (`None` in a spec means the head's default)."""
    return float(DEFAULT_MARGINS[spec.head] if spec.head_margin is None else spec.head_margin)


def check_same_embedding_space(query: ModelSpec, gallery: ModelMeta, method: str) -> None:
    """The query model must produce vectors searchable in the gallery index, from the same images
    (the model contract's `space_mismatch`)."""
    mismatch = space_mismatch(query, gallery.spec)
    if mismatch is None:
        return
    clause = mismatch.describe("the query model", f"the gallery model {gallery.model_id}")
    purpose = " so that query embeddings can be searched in the gallery index" \
        if mismatch.what == "embedding_dim" else ""
    raise CompatibilityError(f"compat.method={method}: {clause}; set {mismatch.fix}{purpose}")


def check_same_head(query: ModelSpec, gallery: ModelMeta, method: str = "bct") -> None:
    """BCT feeds query embeddings to the gallery classifier: its logits only mean what they meant
    for the gallery model under the same head type, scale and margin."""
    q = (query.head, float(query.head_scale), resolved_margin(query))
    g = (gallery.spec.head, float(gallery.spec.head_scale), resolved_margin(gallery.spec))
    if q != g:
        raise CompatibilityError(
            f"compat.method={method}: the query model's head is {q[0]} (scale {q[1]:g}, margin {q[2]:g}) but the gallery "
            f"model {gallery.model_id} was trained with {g[0]} (scale {g[1]:g}, margin {g[2]:g}); the frozen "
            f"gallery classifier only means the same thing under the same head: set model.head={g[0]} "
            f"model.head_scale={g[1]:g} model.head_margin={g[2]:g}")


def check_gallery_file(path: str | Path) -> None:
    """``compat.gallery_model`` names a file (one ConfigError line otherwise)."""
    if not Path(path).is_file():
        raise ConfigError(f"compat.gallery_model: {path}: no such checkpoint file; train the gallery model "
                          "first (hetsearch train GALLERY_CONFIG) or set compat.gallery_model=PATH/model.pt")


def gallery_trained_class_names(meta: ModelMeta) -> list[str]:
    """Classes whose classifier rows the gallery model actually learned.

    A classifier has one row per class of the *source* (also in the open set), so the row count
    says nothing; the training protocol recorded in the checkpoint does. Checkpoints without it
    (written by other code) are taken to know every class they list.
    """
    protocol = meta.extra.get("protocol") or {}
    names = protocol.get("train_classes")
    if names is None:
        return list(meta.classes)
    unknown = sorted(set(names) - set(meta.classes))
    if unknown:
        raise CompatibilityError(f"gallery model {meta.model_id}: its recorded training classes {unknown} are "
                                 "not among its classes; the checkpoint is inconsistent")
    return list(names)


class FrozenGallery(nn.Module):
    """A gallery model that cannot change: parameters without gradient, BatchNorm in eval mode.

    `train()` is overridden so that a caller switching a parent module to training mode cannot
    start updating the gallery's BatchNorm running statistics.
    """

    def __init__(self, loaded: LoadedModel):
        super().__init__()
        self.meta = loaded.meta
        self.path = loaded.path
        self.model: EmbeddingModel = loaded.model
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.model.eval()

    @classmethod
    def load(cls, path: str | Path) -> "FrozenGallery":
        """The gallery model named by ``compat.gallery_model``."""
        check_gallery_file(path)
        return cls(load_checkpoint(path))

    @property
    def model_id(self) -> str:
        return self.meta.model_id

    @property
    def classifier_dim(self) -> int:
        """Width of the space the gallery classifier works in (class means live there too)."""
        return int(self.model.classifier.weight.shape[1])

    def train(self, mode: bool = True) -> "FrozenGallery":
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Gallery embeddings of float images in [0, 1] (a constant target: no graph is built)."""
        return self.model(images, normalize=normalize).float()

    @torch.no_grad()
    def class_means(self, images_uint8: torch.Tensor, labels: torch.Tensor, classes: list[int],
                    batch_size: int = 512) -> torch.Tensor:
        """Mean *normalised* gallery embedding of each class in `classes` (rows in that order), in
        the classifier's space (the projection of the embedding for models that embed backbone
        features), so that the means can stand in for classifier rows.

        Images are embedded as they are (no augmentation), like gallery items at indexing time.
        """
        device = next(self.model.parameters()).device
        dim = self.classifier_dim
        sums = torch.zeros(len(classes), dim, dtype=torch.float64)
        counts = torch.zeros(len(classes), dtype=torch.int64)
        row_of = {c: i for i, c in enumerate(classes)}
        keep = torch.isin(labels.cpu(), torch.tensor(classes, dtype=torch.int64))
        images_uint8, labels = images_uint8[keep.to(images_uint8.device)], labels.cpu()[keep]
        rows = torch.tensor([row_of[int(c)] for c in labels.tolist()], dtype=torch.int64)
        for start in range(0, len(labels), batch_size):
            x = images_uint8[start:start + batch_size].to(device).float().div_(255)
            emb = self.model.classifier_input(self.model(x, normalize=False))
            emb = F.normalize(emb.float(), dim=1).double().cpu()
            sums.index_add_(0, rows[start:start + batch_size], emb)
            counts += torch.bincount(rows[start:start + batch_size], minlength=len(classes))
        missing = [classes[i] for i in range(len(classes)) if counts[i] == 0]
        if missing:
            raise CompatibilityError(f"no training images of class(es) {missing} to build pseudo-classifier rows from")
        return (sums / counts[:, None].double()).float()
