"""BCT (Shen et al., CVPR 2020): the influence loss through the gallery model's frozen classifier.

    L = L_cls(W_q · φ_q(x), y) + λ · L_inf,   L_inf = CE(head(W_g · φ_q(x), y), y)

The trainer computes the first term and multiplies ours by λ (`compat.weight`). W_g is the gallery
model's classifier, copied out of its checkpoint into a *buffer*: it is not a parameter, so no
optimizer (and no weight decay) can ever touch it, and no gradient is computed for it.

Rows of W_g. The frozen classifier covers exactly the query model's training classes:
- a class the gallery model was trained on keeps its gallery row;
- a class it was not trained on (a "new" class: the open set, or a query model trained on more
  classes) gets a pseudo-classifier row, the gallery model's mean normalised embedding of the
  class's training images, so that φ_q is pulled towards where φ_g puts that class. The rows are
  computed once and cached in the run folder (`bct_pseudo_classifier.pt`), so resuming reuses them.
Classes outside the query model's training set get no row: their softmax denominator terms would
only push query embeddings away from rows that were never trained (the gallery classifier keeps a
row for every class of the source, trained or not).

Variant `bct_mean`: every row (not only new classes) is the gallery model's class mean. With few
classes in a wide embedding, W_g spans a small subspace that holds a small part of the gallery
embeddings' energy (about a quarter for the Fashion-MNIST paragon: 10 rows, 128 dimensions), and
gallery items of a class sit near their class mean, far from their classifier row (cosine ~0.9
versus ~0.25). The influence loss through W_g then leaves most of the query embedding
unconstrained; class-mean rows pull φ_q to where the gallery items actually are.

Gallery models that embed their backbone features (`model.embedding_layer: backbone`) train their
classifier on a projection of the embedding. Their "frozen classifier" is then the projection and
the rows together: the projection's weights and BatchNorm statistics are copied into buffers as
well (`FrozenProjection`), and class-mean rows live in the projection's space.

Choices (see docs/compat.md): the head type, scale and margin are the gallery model's (a different
query head is an error); the influence loss uses no label smoothing, because smoothing exists to
keep a *learned* classifier from growing over-confident and W_g cannot change.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hetsearch.compat.base import CompatibilityTerm, register_compat_method
from hetsearch.compat.gallery import (FrozenGallery, check_same_embedding_space, check_same_head,
                                      gallery_trained_class_names, resolved_margin)
from hetsearch.data import ImageSet
from hetsearch.errors import CompatibilityError
from hetsearch.models.heads import logits_with_margin
from hetsearch.utils.io import atomic_torch_save

PSEUDO_CLASSIFIER_FILE = "bct_pseudo_classifier.pt"


class FrozenProjection(nn.Module):
    """A copy of an embedding head (Linear without bias + BatchNorm1d in eval mode) as buffers."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.register_buffer("weight", head.proj.weight.detach().float().clone())
        norm = head.norm
        self.register_buffer("running_mean", norm.running_mean.detach().float().clone())
        self.register_buffer("running_var", norm.running_var.detach().float().clone())
        self.register_buffer("bn_weight", norm.weight.detach().float().clone())
        self.register_buffer("bn_bias", norm.bias.detach().float().clone())
        self.eps = float(norm.eps)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(F.linear(embeddings, self.weight), self.running_mean, self.running_var,
                            self.bn_weight, self.bn_bias, training=False, eps=self.eps)


class FrozenClassifier(nn.Module):
    """Cosine classifier with fixed rows, indexed by the query model's labels.

    `row_of_label[y]` is the row of class index `y` (-1: no row). Weights are buffers. With a
    `projection` (gallery models that embed backbone features) embeddings are projected first.
    """

    def __init__(self, weight: torch.Tensor, row_of_label: torch.Tensor, head: str, scale: float, margin: float,
                 projection: FrozenProjection | None = None):
        super().__init__()
        self.register_buffer("weight", weight.detach().float().clone())
        self.register_buffer("row_of_label", row_of_label.to(torch.int64).clone())
        self.head, self.scale, self.margin = head, float(scale), float(margin)
        self.projection = projection

    def rows(self, labels: torch.Tensor) -> torch.Tensor:
        rows = self.row_of_label[labels]
        if bool((rows < 0).any()):
            missing = sorted(set(labels[rows < 0].tolist()))
            raise CompatibilityError(f"BCT: label(s) {missing} have no row in the frozen gallery classifier; "
                                     "every training class of the query model needs one")
        return rows

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits with the head's margin on the target, target rows) for unnormalised embeddings."""
        rows = self.rows(labels)
        if self.projection is not None:
            embeddings = self.projection(embeddings)
        cosine = F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))
        return logits_with_margin(cosine, rows, self.head, self.scale, self.margin), rows


@register_compat_method("bct")
class BCTTerm(CompatibilityTerm):
    """BCT: the gallery classifier's rows, class means only for classes the gallery lacks.

    λ-less influence loss: cross-entropy of the frozen gallery classifier on query embeddings.
    """

    needs_labels = True
    same_head = True
    frozen_submodules = ("classifier",)  # W_g: rebuilt from the gallery checkpoint, never checkpointed
    rows_from = "classifier"             # where the frozen rows come from (`build_frozen_classifier`)
    method_name = "bct"

    def __init__(self, classifier: FrozenClassifier, gallery_model_id: str, label_smoothing: float = 0.0,
                 pseudo_classes: list[str] | None = None, method: str | None = None):
        super().__init__()
        self.method = method or self.method_name
        self.classifier = classifier
        self.gallery_model_id = gallery_model_id
        self.label_smoothing = float(label_smoothing)
        self.pseudo_classes = list(pseudo_classes or [])

    def forward(self, embeddings: torch.Tensor, images: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        logits, rows = self.classifier(embeddings.float(), labels)
        return F.cross_entropy(logits, rows, label_smoothing=self.label_smoothing)

    @classmethod
    def build(cls, cfg, *, model_spec, classes: list[str], train_set: ImageSet, run_dir: Path | None,
              device: torch.device | str, augment) -> "BCTTerm":
        method = cls.method_name
        gallery = FrozenGallery.load(cfg.gallery_model)
        check_same_embedding_space(model_spec, gallery.meta, method)
        check_same_head(model_spec, gallery.meta, method)
        gallery.to(device)
        cache = PseudoClassifierCache(Path(run_dir) / PSEUDO_CLASSIFIER_FILE) if run_dir is not None else None
        classifier, summary = build_frozen_classifier(gallery, classes, train_set, cache, rows_from=cls.rows_from)
        # only the classifier rows are kept: the gallery model itself is released here
        term = cls(classifier, gallery.model_id, pseudo_classes=summary["pseudo_classes"]).to(device)
        term.summary = {"method": method, "gallery_model_id": gallery.model_id, "label_smoothing": 0.0, **summary}
        return term


@register_compat_method("bct_mean")
class BCTMeanTerm(BCTTerm):
    """BCT with the gallery model's class means as every row of the frozen classifier."""

    rows_from = "class_mean"
    method_name = "bct_mean"


# ----------------------------------------------------------------------------- pseudo-classifier

def _fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """Identifies the images the class means were computed from (cache validity)."""
    digest = hashlib.sha256()
    digest.update(labels.cpu().numpy().tobytes())
    digest.update(images.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class PseudoClassifierCache:
    """`run_dir/bct_pseudo_classifier.pt`: the rows, valid for one gallery model and one image set."""

    path: Path

    def load(self, gallery_model_id: str, class_names: list[str], fingerprint: str) -> torch.Tensor | None:
        if not self.path.is_file():
            return None
        try:
            cached = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # a damaged cache is recomputed, never trusted
            return None
        if (cached.get("gallery_model_id"), cached.get("classes"), cached.get("fingerprint")) != \
                (gallery_model_id, class_names, fingerprint):
            return None
        return cached["rows"]

    def save(self, gallery_model_id: str, class_names: list[str], fingerprint: str, rows: torch.Tensor) -> None:
        atomic_torch_save({"gallery_model_id": gallery_model_id, "classes": class_names,
                           "fingerprint": fingerprint, "rows": rows.cpu()}, self.path)


def pseudo_classifier_rows(gallery: FrozenGallery, train_set: ImageSet, class_indices: list[int],
                           cache: PseudoClassifierCache | None = None) -> torch.Tensor:
    """Mean normalised gallery embedding of each class in `class_indices` (one row each, in order)."""
    if not class_indices:
        return torch.zeros(0, gallery.classifier_dim)
    names = [train_set.classes[c] for c in class_indices]
    keep = torch.isin(train_set.labels.cpu(), torch.tensor(class_indices, dtype=torch.int64))
    images, labels = train_set.images[keep.to(train_set.images.device)], train_set.labels.cpu()[keep]
    fingerprint = _fingerprint(images, labels)
    if cache is not None:
        rows = cache.load(gallery.model_id, names, fingerprint)
        if rows is not None:
            return rows
    rows = gallery.class_means(images, labels, class_indices)
    if cache is not None:
        cache.save(gallery.model_id, names, fingerprint, rows)
    return rows


ROW_SOURCES = ("classifier", "class_mean")


def build_frozen_classifier(gallery: FrozenGallery, classes: list[str], train_set: ImageSet,
                            cache: PseudoClassifierCache | None = None,
                            rows_from: str = "classifier") -> tuple[FrozenClassifier, dict]:
    """W_g restricted to the training classes of `train_set`, with pseudo rows for new classes.

    `rows_from="class_mean"` gives every class a pseudo row (the `bct_mean` variant).
    Returns the classifier and a summary (which classes kept gallery rows, which got pseudo rows).
    Classes are matched by name, so a gallery model whose class list is ordered differently works.
    """
    if rows_from not in ROW_SOURCES:
        raise ValueError(f"rows_from: got {rows_from!r}, expected one of {ROW_SOURCES}")
    meta = gallery.meta
    known = set(gallery_trained_class_names(meta)) if rows_from == "classifier" else set()
    gallery_row = {name: i for i, name in enumerate(meta.classes)}
    train_classes = sorted(set(train_set.labels.cpu().tolist()))
    old = [c for c in train_classes if classes[c] in known]
    new = [c for c in train_classes if classes[c] not in known]

    weight_g = gallery.model.classifier.weight.detach().float().cpu()
    rows = torch.zeros(len(train_classes), weight_g.shape[1])
    row_of_label = torch.full((len(classes),), -1, dtype=torch.int64)
    for row, c in enumerate(train_classes):
        row_of_label[c] = row
    for c in old:
        rows[row_of_label[c]] = weight_g[gallery_row[classes[c]]]
    if new:
        pseudo = pseudo_classifier_rows(gallery, train_set, new, cache)
        for i, c in enumerate(new):
            rows[row_of_label[c]] = pseudo[i]
    spec = meta.spec
    projection = FrozenProjection(gallery.model.embedding_head) if gallery.model.embeds_backbone_features else None
    classifier = FrozenClassifier(rows, row_of_label, spec.head, spec.head_scale, resolved_margin(spec), projection)
    summary = {"gallery_classes": [classes[c] for c in old], "pseudo_classes": [classes[c] for c in new]}
    return classifier, summary
