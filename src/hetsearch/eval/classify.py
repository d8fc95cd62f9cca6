"""Closed-set classification accuracy of an embedding model's own classifier.

Not a retrieval metric: a diagnostic of what a query model has learnt. A query model that puts a
query in the wrong class with its own classifier rarely embeds it next to the right gallery items,
so its test accuracy is a practical ceiling to read heterogeneous Recall@1 against.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hetsearch.errors import DataError
from hetsearch.utils.torch_modules import eval_mode, on_device
from hetsearch.eval.embed import embed

__all__ = ["classification_accuracy"]


def classification_accuracy(model, images_uint8: Any, labels: Any, batch_size: int = 512,
                            device: str | torch.device | None = None) -> float:
    """Fraction of `images_uint8` whose arg-max logit (the model's classifier, no margin) is their label.

    `labels` index the model's own classes (closed set). Embeddings are computed with `embed`
    (eval mode, unnormalised), then fed through the classifier (and the projection, for models that
    embed backbone features) on the CPU.
    """
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    num_classes = model.classifier.num_classes
    if labels.ndim != 1 or len(labels) != len(images_uint8):
        raise DataError(f"labels: expected one label per image ({len(images_uint8)}), got shape {tuple(labels.shape)}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(f"labels: expected class indices in [0, {num_classes}) (the model's classes), "
                        f"got values in [{int(labels.min())}, {int(labels.max())}]")
    raw = torch.from_numpy(embed(model, images_uint8, batch_size=batch_size, device=device, normalize=False))
    # the classifier step is tiny: run it on a CPU copy (the caller's model is never moved)
    runner = on_device(model, "cpu")
    with eval_mode(runner), torch.inference_mode():
        logits = runner.classifier(runner.classifier_input(raw))
    return float((logits.argmax(1) == labels).float().mean()) if len(labels) else float("nan")
