"""Re-export of the model contract, which lives in `hetsearch.models.contract` (a lower layer, so
that the index and the server can check a model pair without loading the compatibility losses).
Kept so that `hetsearch.compat.contract` imports keep working; new code imports
`hetsearch.models.contract`."""

from hetsearch.models.contract import SpaceMismatch, check_pair, declared_compatible, space_mismatch

__all__ = ["SpaceMismatch", "check_pair", "declared_compatible", "space_mismatch"]
