"""Compatibility between a query model and a gallery model.

Compatibility by parameters: a query model is trained with a compatibility term against a frozen
gallery model (BCT, or the L2 / distillation baselines); methods register by name, so the trainer
never branches on the method. The model contract (`hetsearch.models.contract.check_pair`) says
which models may be compared; the compatibility grid (`hetsearch.eval.grid.run_grid`) measures
every (query, gallery) pair. See docs/compat.md.
"""

from hetsearch.compat.base import (METHODS, CompatibilityTerm, build_compat_term, compat_methods,
                                   register_compat_method, term_classes)

# modules that register compatibility methods when imported
from hetsearch.compat import bct as _bct  # noqa: E402,F401  (registers "bct", "bct_mean")
from hetsearch.compat import feature_matching as _feature_matching  # noqa: E402,F401  ("l2", "distill")
from hetsearch.compat import bank_terms as _bank_terms  # noqa: E402,F401  ("bank_l2")
from hetsearch.compat import contrastive as _contrastive  # noqa: E402,F401  ("contrastive")
from hetsearch.compat import relational as _relational  # noqa: E402,F401  ("relational")
from hetsearch.compat import context as _context  # noqa: E402,F401  ("context")
from hetsearch.compat.bct import BCTTerm, FrozenClassifier, build_frozen_classifier, pseudo_classifier_rows  # noqa: E402
from hetsearch.compat.feature_matching import FeatureMatchingTerm  # noqa: E402
from hetsearch.compat.gallery import FrozenGallery  # noqa: E402

__all__ = ["METHODS", "CompatibilityTerm", "build_compat_term", "compat_methods", "register_compat_method",
           "term_classes", "BCTTerm", "FrozenClassifier", "FeatureMatchingTerm", "FrozenGallery",
           "build_frozen_classifier", "pseudo_classifier_rows"]
