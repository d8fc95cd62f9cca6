"""Re-export: the helpers live in `hetsearch.utils.torch_modules` (below `models`, which counts
FLOPs with them when it saves a checkpoint)."""

from hetsearch.utils.torch_modules import eval_mode, model_device, on_device

__all__ = ["eval_mode", "model_device", "on_device"]
