"""`Preprocessing`: how an image becomes a model's input, carried by the model.

Like timm's pretrained config, it travels with the model: a checkpoint's `ModelSpec` stores it
(``image_size``, ``in_chans``, ``mean``, ``std``, ``resize``, ``background``), `ModelSpec.preprocessing`
returns it, and an ONNX export writes it into its metadata. Training data, gallery images, query
files and uploads are all decoded with it (`decode_spec`), so a model sees the same pixels
wherever it runs. ``mean`` and ``std`` are applied inside the model (and the exported graph), to
float images in [0, 1]; decoding never applies them.

It is built from a run config once, by `hetsearch.models.spec_from_config` (``data.image_size``,
``data.channels``, ``data.resize``, ``data.background``, ``model.mean``, ``model.std``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Union

from PIL import ImageColor

from hetsearch.data.fileset import DecodeSpec
from hetsearch.errors import ConfigError

Norm = Union[float, list, tuple, None]


def colour_rgb(colour: str, what: str = "data.background") -> tuple[int, int, int]:
    """A Pillow colour name ("white", "#808080", "rgb(10,20,30)") as an (R, G, B) tuple."""
    try:
        rgb = ImageColor.getrgb(str(colour))
    except ValueError:
        raise ConfigError(f"{what}: got {colour!r}, expected a colour such as white, black, #808080 or "
                          "rgb(10,20,30)") from None
    return tuple(int(v) for v in rgb[:3])  # type: ignore[return-value]


@dataclass(frozen=True)
class Preprocessing:
    """Everything between an image file and the model's input tensor.

    image_size: side of the square input; channels: 1 (greyscale) or 3 (RGB); mean/std: the
    normalisation the model applies to [0, 1] pixels (per channel, or one value for every channel);
    resize: "center_crop" (shorter side to ``image_size``, centre square) or "stretch";
    background: the colour transparent pixels are composited on.
    """

    image_size: int
    channels: int
    mean: Norm = None
    std: Norm = None
    resize: str = "center_crop"
    background: str = "white"

    def background_rgb(self) -> tuple[int, int, int]:
        return colour_rgb(self.background)

    def decode_spec(self, on_bad_image: str = "fail") -> DecodeSpec:
        """How the data layer decodes an image file for this model."""
        return DecodeSpec(channels=self.channels, image_size=self.image_size, resize=self.resize,
                          background=self.background_rgb(), on_bad_image=on_bad_image)

    def to_dict(self) -> dict:
        return asdict(self)


def preprocessing_from_saved_config(config: Optional[dict]) -> dict:
    """``resize`` and ``background`` of a checkpoint written before the model carried them: what its
    saved training config's ``data:`` section said (the defaults when it said nothing)."""
    data = ((config or {}).get("data") or {}) if isinstance(config, dict) else {}
    return {"resize": data.get("resize") or "center_crop", "background": data.get("background") or "white"}
