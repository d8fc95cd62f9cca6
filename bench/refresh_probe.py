"""Catalogue refresh, probed on one open-set gallery and query model (issue 20, short schedule).

The open set of Fashion-MNIST with data.gallery=catalogue: models trained on 5 classes; the other 5
classes' training images are the catalogue the gallery model indexes (30,000 items), their test
images the queries (5,000, never seen by any model). For the given gallery and query models:
M(g, g), M(q, g), M(q, q) before any refresh; then each refresh variant (`hetsearch refresh`
options: fine-tuning epochs, replay share, and the closed-form linear map `refresh.linear`, also
alone with epochs=0; finished refresh runs are reused, so a rerun only scores), and one approach
the product does not ship, measured for the record: an affine map fitted on the catalogue applied
to the index's stored vectors (g(x) A ~ q(x); queries unchanged); and the same map as `refresh epochs=0`
fitted on an index of the models' own training classes only (the open set without refresh).
Choices are read off the refresh's own validation split (held-out catalogue items) and of a
held-out 10% of the catalogue for the maps; test numbers are reported for every variant, so this
probe ranks nothing by test. The 30-epoch, 3-seed numbers come from bench/gallery_aware.py
(protocol open_set_refresh).

    python bench/refresh_probe.py --gallery runs/refresh_dev/gallery_open/model.pt \\
        --query runs/refresh_dev/q_open/model.pt --out runs/refresh_dev

The two models of docs/results/refresh_probe.json were trained with (6 epochs each, seed 0):

    hetsearch train configs/fashion_mnist/gallery.yaml data.protocol=open_set train.epochs=6 \\
        name=gallery_open output_dir=runs/refresh_dev runtime.num_threads=1
    hetsearch train configs/fashion_mnist/query_shufflenetv2_x0_5.yaml name=q_open output_dir=runs/refresh_dev \\
        data.protocol=open_set compat.method=contrastive+relational train.task_loss=none \\
        compat.gallery_model=runs/refresh_dev/gallery_open/model.pt train.epochs=6 \\
        train.bn_recalibration_batches=20 runtime.num_threads=1 runtime.progress=false
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _shared  # noqa: F401  (puts src/ on the path like every bench)
import numpy as np
import torch

from hetsearch.data import DataConfig, make_splits
from hetsearch.eval.embed import embed
from hetsearch.eval.metrics import retrieval_metrics
from hetsearch.index import build_index
from hetsearch.index.items import GalleryItems
from hetsearch.models import load_checkpoint
from hetsearch.train.refresh import RefreshConfig, refresh
from hetsearch.utils.results import write_results
from hetsearch.utils.typed_config import from_dict

# name -> (start from: "query" or another variant's refreshed model, refresh options)
VARIANTS = {"linear": ("query", {"epochs": 0}),
            "e1": ("query", {"epochs": 1, "linear": False}),
            "e2": ("query", {"epochs": 2, "linear": False}),
            "e2_r0": ("query", {"epochs": 2, "replay": 0.0, "linear": False}),
            "e2_r25": ("query", {"epochs": 2, "replay": 0.25, "linear": False}),
            "e2+linear": ("e2", {"epochs": 0}),
            "e2_r0+linear": ("e2_r0", {"epochs": 0}),
            # the last points (issue 20.2): longer, a faster rate, the exact-vector regression added to the
            # contrastive and relational terms, a sharper contrastive temperature; each also + the map
            "e4_r0": ("query", {"epochs": 4, "replay": 0.0, "linear": False}),
            "e2_r0_lr05": ("query", {"epochs": 2, "replay": 0.0, "lr": 0.05, "linear": False}),
            "e2_r0_l2": ("query", {"epochs": 2, "replay": 0.0, "linear": False,
                                   "method": "contrastive+relational+bank_l2"}),
            "e2_r0_t05": ("query", {"epochs": 2, "replay": 0.0, "linear": False,
                                    "overrides": {"compat.gallery_aware.temperature": 0.05}}),
            "e4_r0+linear": ("e4_r0", {"epochs": 0}),
            # longer refreshes with replay (the photos' catalogue is harder than Fashion-MNIST's)
            "e4": ("query", {"epochs": 4, "linear": False}),
            "e8": ("query", {"epochs": 8, "linear": False}),
            "e8+linear": ("e8", {"epochs": 0}),
            "e2_r0_lr05+linear": ("e2_r0_lr05", {"epochs": 0}),
            "e2_r0_l2+linear": ("e2_r0_l2", {"epochs": 0}),
            "e2_r0_t05+linear": ("e2_r0_t05", {"epochs": 0})}
RIDGE = (1e-2, 1.0, 10.0)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery", required=True, help="open-set gallery model (model.pt)")
    p.add_argument("--query", required=True, help="open-set query model (model.pt)")
    p.add_argument("--out", required=True, help="folder for the catalogue index and the refresh runs")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    p.add_argument("--results", default="refresh_probe")
    p.add_argument("--data-from-query", action="store_true",
                   help="the data of the query model's own training config (e.g. CIFAR-10 photos) instead of "
                        "Fashion-MNIST; protocol open_set, gallery = catalogue either way")
    return p.parse_args()


def probe_data(args) -> DataConfig:
    """Fashion-MNIST's open set with the catalogue as the gallery, or (--data-from-query) the query model's own
    training data (its checkpoint's config) in the same protocol."""
    if not args.data_from_query:
        return DataConfig(source="fashion_mnist", protocol="open_set", gallery="catalogue")
    saved = dict(load_checkpoint(args.query).meta.config["data"])
    saved.update(protocol="open_set", gallery="catalogue", val_classes=0.0)
    return from_dict(DataConfig, saved, where=f"{args.query}: data")


def norm(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Scorer:
    """Recall@1 / MAP@R of query embeddings against catalogue embeddings (test queries)."""

    def __init__(self, splits):
        self.splits, self.yq, self.yg = splits, splits.query.labels.numpy(), splits.gallery.labels.numpy()

    def embed(self, path: Path, which: str, normalize: bool = True) -> np.ndarray:
        model = load_checkpoint(path).model
        return embed(model, getattr(self.splits, which).images, device="cpu", normalize=normalize)

    def __call__(self, queries: np.ndarray, gallery: np.ndarray) -> dict:
        m = retrieval_metrics(norm(queries), self.yq, norm(gallery), self.yg, ks=(1,))
        return {"recall_at_1": round(m["recall_at_1"], 4), "map_at_r": round(m["map_at_r"], 4)}


def catalogue_index(folder: Path, gallery: Path, catalogue) -> Path:
    """An index of `catalogue` (a split) by the gallery model, built once."""
    if not (folder / "manifest.json").is_file():
        items = GalleryItems(images=catalogue.images, sources=list(catalogue.sources),
                             labels=[catalogue.classes[int(i)] for i in catalogue.labels],
                             fields=[{} for _ in range(len(catalogue))])
        build_index(folder, load_checkpoint(gallery), items)
    return folder


def training_classes_map(score: Scorer, out: Path, paths: dict, g_path: Path, g_cat: np.ndarray) -> dict:
    """The open set *without* refresh, for the record (issue 20.2, the linear map): the same closed-form map
    as `refresh epochs=0`, fitted on an index of the models' own training images (5 training classes,
    none of the catalogue's), then scored like the refreshes on the unseen classes."""
    index = catalogue_index(out / "training_index", g_path, score.splits.train)
    result = refresh(RefreshConfig(index=str(index), query_model=str(paths["query"]), output_dir=str(out / "refreshes"),
                                   name="train_classes_map", epochs=0,
                                   overrides={"runtime.progress": "false", "runtime.num_threads": 1}), resume=True)
    fitted, p = result.train.meta.extra.get("linear_map", {}), result.train.model_path
    r_query, r_cat = score.embed(p, "query"), score.embed(p, "gallery")
    return {"variant": "map fitted on the training classes only (open set without refresh)", "linear_map": fitted or None,
            "val_recall_at_1": fitted.get("val_recall_at_1_after" if fitted.get("applied") else "val_recall_at_1_before"),
            "homo_recall_at_1": score(r_query, r_cat)["recall_at_1"], **score(r_query, g_cat)}


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)


def stored_vector_map(score: Scorer, q_path: Path, g_cat: np.ndarray) -> dict:
    """The index-side map (not shipped): g(x) A ~ q(x) fitted on 90% of the catalogue, λ chosen on
    the other 10% (each searching the fitted items), test reported once for the chosen λ."""
    q_cat, q_query = score.embed(q_path, "gallery"), score.embed(q_path, "query")
    order = np.random.default_rng(0).permutation(len(g_cat))
    fit, held = order[: len(order) * 9 // 10], order[len(order) * 9 // 10:]
    best = None
    for lam in RIDGE:
        a = ridge(g_cat[fit], q_cat[fit], lam)
        val = retrieval_metrics(norm(q_cat[held]), score.yg[held], norm(g_cat[fit] @ a), score.yg[fit],
                                ks=(1,))["recall_at_1"]
        best = best if best is not None and best[0] >= val else (val, lam, a)
    val, lam, a = best
    return {"variant": "as trained + map stored vectors (not shipped)", "ridge_lambda": lam,
            "val_recall_at_1": round(val, 4), **score(q_query, g_cat @ a)}


def refresh_variant(score: Scorer, index: Path, out: Path, paths: dict, name: str, g_cat: np.ndarray) -> dict:
    start, options = VARIANTS[name]
    options = dict(options)
    overrides = {"runtime.progress": "false", "runtime.num_threads": 1, **options.pop("overrides", {})}
    result = refresh(RefreshConfig(index=str(index), query_model=str(paths[start]), output_dir=str(out / "refreshes"),
                                   name=name, overrides=overrides, **options), resume=True)
    paths[name] = p = result.train.model_path
    history, fitted = result.train.history, result.train.meta.extra.get("linear_map", {})
    val = fitted.get("val_recall_at_1_after") if fitted.get("applied") else (
        fitted.get("val_recall_at_1_before") if fitted else history[-1]["val_hetero_recall_at_1"] if history else None)
    r_query, r_cat = score.embed(p, "query"), score.embed(p, "gallery")
    return {"variant": f"refresh {name}", "start": start, **VARIANTS[name][1], "linear_map": fitted or None,
            "refresh_seconds": round(result.train.train_seconds, 1), "val_recall_at_1": val,
            "homo_recall_at_1": score(r_query, r_cat)["recall_at_1"], **score(r_query, g_cat)}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    splits = make_splits(probe_data(args))
    score, out = Scorer(splits), Path(args.out)
    g_path, q_path = Path(args.gallery), Path(args.query)
    index = catalogue_index(out / "catalogue_index", g_path, splits.gallery)
    g_cat, g_query = score.embed(g_path, "gallery"), score.embed(g_path, "query")
    q_query, q_cat = score.embed(q_path, "query"), score.embed(q_path, "gallery")
    gg, qq = score(g_query, g_cat), score(q_query, q_cat)
    rows = [{"variant": "query model as trained", "homo_recall_at_1": qq["recall_at_1"], **score(q_query, g_cat)},
            stored_vector_map(score, q_path, g_cat)]
    paths = {"query": q_path}
    rows.append(training_classes_map(score, out, paths, g_path, g_cat))
    for name in [v for v in args.variants.split(",") if v]:
        rows.append(refresh_variant(score, index, out, paths, name, g_cat))
    q_meta, g_meta = load_checkpoint(q_path).meta, load_checkpoint(g_path).meta
    for row in rows:
        row.update(method=row["variant"], label=row["variant"], query_model=q_meta.model_id,
                   gallery_model=g_meta.model_id, query_mflops=round(q_meta.flops / 1e6, 3),
                   gallery_mflops=round(g_meta.flops / 1e6, 3), protocol="open_set_refresh", seed=0,
                   gap_to_paragon=round(row["recall_at_1"] - gg["recall_at_1"], 4),
                   beats_own_index=row["recall_at_1"] > qq["recall_at_1"])
    write_results(args.results, protocol={
        "data": (f"{splits.protocol.get('source', 'the query model data')} open set (--data-from-query)"
                 if args.data_from_query else "Fashion-MNIST open set")
                + f", data.gallery=catalogue: catalogue = the test classes' {len(splits.gallery)} training images "
                  f"(indexed by the gallery model), queries = their {len(splits.query)} test images",
        "gallery_model": str(g_path), "query_model": str(q_path),
        "models_trained_by": json.loads((g_path.parent / "summary.json").read_text()).get("model_id"),
        "M(g, g)": gg, "M(q, q) before refresh": qq,
        "selection": "refresh variants by the refresh's held-out catalogue items (val_recall_at_1), ridge λ by a "
                     "held-out 10% of the catalogue; test reported for every variant"},
        rows=rows, timings_s={"total": round(time.perf_counter() - started, 1)},
        columns=["variant", "recall_at_1", "map_at_r", "homo_recall_at_1", "val_recall_at_1", "gap_to_paragon",
                 "beats_own_index", "refresh_seconds"],
        title="Catalogue refresh probe (open set, short schedule)",
        extra={"paragon_recall_at_1": gg["recall_at_1"], "query_homo_recall_at_1": qq["recall_at_1"]})


if __name__ == "__main__":
    main()
