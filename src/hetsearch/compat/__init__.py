from hetsearch.compat.base import (CompatibilityTerm, build_compat_term, compat_methods,
                                   register_compat_method)

__all__ = ["CompatibilityTerm", "build_compat_term", "compat_methods", "register_compat_method"]
from hetsearch.compat.contract import check_pair, declared_compatible  # noqa: E402

__all__ += ["check_pair", "declared_compatible"]
