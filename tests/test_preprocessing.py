"""The model's preprocessing spec (issue 22): built from the config by one function, stored in the
checkpoint (older checkpoints derive it from their saved data config), used to decode queries."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from hetsearch.config import ModelConfig
from hetsearch.data.config import DataConfig
from hetsearch.data.decode import decode_image_bytes
from hetsearch.data.preprocessing import Preprocessing
from hetsearch.errors import ConfigError
from hetsearch.models.checkpoint import FORMAT, ModelMeta, load_checkpoint, save_checkpoint
from hetsearch.models.embedding_model import create_model_from_config, spec_from_config

MODEL = dict(backbone="resnet18", backbone_args={"width": 4}, embedding_dim=16)


def test_spec_from_config_carries_the_whole_preprocessing(tmp_path):
    model_cfg = ModelConfig(**MODEL, head="cosface", mean=[0.4], std=[0.2])
    data_cfg = DataConfig(image_size=20, channels=1, resize="stretch", background="black")
    spec = spec_from_config(model_cfg, data_cfg, num_classes=3)
    assert spec.preprocessing == Preprocessing(image_size=20, channels=1, mean=[0.4], std=[0.2], resize="stretch",
                                               background="black")
    assert (spec.head, spec.num_classes, spec.embedding_dim) == ("cosface", 3, 16)
    model = create_model_from_config(model_cfg, data_cfg, num_classes=3)
    assert model.spec == spec
    save_checkpoint(tmp_path / "m.pt", model, classes=["a", "b", "c"])
    stored = torch.load(tmp_path / "m.pt", weights_only=True)["meta"]["spec"]
    assert (stored["resize"], stored["background"]) == ("stretch", "black")  # in the checkpoint itself
    assert load_checkpoint(tmp_path / "m.pt").meta.spec.preprocessing == spec.preprocessing


def _old_format(path, config: dict | None):
    """Rewrite a checkpoint as written before the spec carried resize and background."""
    payload = torch.load(path, weights_only=True)
    for name in ("resize", "background"):
        del payload["meta"]["spec"][name]
    payload["meta"]["config"] = config or {}
    assert payload["format"] == FORMAT
    torch.save(payload, path)


@pytest.mark.parametrize("config, expected", [
    ({"data": {"resize": "stretch", "background": "#808080", "channels": 1}}, ("stretch", "#808080")),
    ({}, ("center_crop", "white")),
    ({"data": {"resize": None}}, ("center_crop", "white")),
])
def test_old_checkpoints_take_the_preprocessing_from_their_saved_data_config(tmp_path, config, expected):
    model = create_model_from_config(ModelConfig(**MODEL), DataConfig(image_size=16), num_classes=2)
    save_checkpoint(tmp_path / "old.pt", model, classes=["a", "b"])
    _old_format(tmp_path / "old.pt", config)
    loaded = load_checkpoint(tmp_path / "old.pt")
    prep = loaded.meta.spec.preprocessing
    assert (prep.resize, prep.background, prep.image_size, prep.channels) == (*expected, 16, 1)
    x = torch.rand(3, 1, 16, 16)
    with torch.inference_mode():
        assert torch.equal(loaded.model(x), model.eval()(x))  # same weights, same embeddings
    # an index manifest keeps the gallery record without its config: it still reads (defaults)
    record = loaded.meta.to_dict()
    for name in ("config", "extra"):
        record.pop(name)
    del record["spec"]["resize"], record["spec"]["background"]
    assert ModelMeta.from_dict(record).spec.resize == "center_crop"


def _transparent_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (width, height), (200, 10, 10, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_queries_are_decoded_with_the_models_preprocessing():
    data = _transparent_png(30, 12)
    black = Preprocessing(image_size=8, channels=3, resize="stretch", background="black").decode_spec()
    white = Preprocessing(image_size=8, channels=1, background="white").decode_spec()
    assert black.background == (0, 0, 0) and black.resize == "stretch"
    assert np.all(decode_image_bytes(data, black) == 0)          # composited on the model's background
    out = decode_image_bytes(data, white)
    assert out.shape == (1, 8, 8) and np.all(out == 255)
    with pytest.raises(ConfigError, match="data.background"):
        Preprocessing(image_size=8, channels=3, background="not-a-colour").decode_spec()
