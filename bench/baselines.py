"""Issue 2 benchmark: the paragon and two light baselines, each trained independently.

Fashion-MNIST, closed set: queries = test split (10k), gallery = the whole training split (60k).
Writes docs/results/baselines.{json,md}: Recall@1/5/10, MAP@R, mAP, FLOPs, params, CPU latency,
training time per model, and the time of one 10k x 60k evaluation. A paragon that embeds its
backbone features (model.embedding_layer: backbone) also gets an ablation row: the same weights,
embedding taken from the projection head instead.

    python bench/baselines.py            # full: paragon 15 epochs, light models 6 epochs
    python bench/baselines.py --quick    # minutes: subsets, 1 epoch (checks that it runs)
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import _shared  # noqa: F401  (puts src/ on the path)
import torch

from hetsearch.data import make_splits
from hetsearch.eval import measure_latency
from hetsearch.eval.report import evaluate_loaded
from hetsearch.models import EmbeddingModel, LoadedModel, load_checkpoint
from hetsearch.models.cost import count_flops
from hetsearch.train import train
from hetsearch.utils.results import write_results


def evaluation_speed_check(paragon, splits) -> dict:
    """Time retrieval metrics for the test queries against the *whole* training split (60k in the
    full run) and compare Recall@1 / MAP@R with pytorch-metric-learning on the same embeddings."""
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    from hetsearch.eval import embed, retrieval_metrics

    gallery_images = torch.cat([splits.train.images, splits.val.images])
    gallery_labels = torch.cat([splits.train.labels, splits.val.labels]).numpy()
    q_emb = embed(paragon.model, splits.query.images)
    g_emb = embed(paragon.model, gallery_images)
    q_labels = splits.query.labels.numpy()
    started = time.perf_counter()
    ours = retrieval_metrics(q_emb, q_labels, g_emb, gallery_labels, ks=(1, 5, 10))
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    # pytorch-metric-learning keeps max-class-count neighbours per query (6k here) in several
    # dense copies; query chunks bound its memory, and both metrics are per-query means.
    calculator = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"), device=torch.device("cpu"))
    pml = {"precision_at_1": 0.0, "mean_average_precision_at_r": 0.0}
    for start in range(0, len(q_emb), 1000):
        chunk = slice(start, start + 1000)
        part = calculator.get_accuracy(torch.from_numpy(q_emb[chunk]), torch.from_numpy(q_labels[chunk]),
                                       torch.from_numpy(g_emb), torch.from_numpy(gallery_labels),
                                       ref_includes_query=False)
        for key in pml:
            pml[key] += part[key] * len(q_emb[chunk]) / len(q_emb)
    pml_seconds = time.perf_counter() - started
    return {"metrics_10k_x_full_train_s": round(ours_seconds, 2), "pml_same_metrics_s": round(pml_seconds, 2),
            "num_queries": len(q_emb), "num_gallery": len(g_emb),
            "recall_at_1_abs_diff_vs_pml": abs(ours["recall_at_1"] - pml["precision_at_1"]),
            "map_at_r_abs_diff_vs_pml": abs(ours["map_at_r"] - pml["mean_average_precision_at_r"])}


def projection_embedding_variant(loaded: LoadedModel) -> LoadedModel:
    """The same network and weights, embedding taken from the projection head (the ablation of
    model.embedding_layer=backbone)."""
    spec = loaded.meta.spec
    head_dim = int(loaded.model.classifier.weight.shape[1])
    variant_spec = dataclasses.replace(spec, embedding_layer="head", embedding_dim=head_dim, projection_dim=None)
    model = EmbeddingModel(variant_spec)
    model.load_state_dict(loaded.model.state_dict())
    meta = dataclasses.replace(loaded.meta, spec=variant_spec, model_id=f"{loaded.meta.model_id}+projection",
                               flops=count_flops(model.eval(), (1, *model.input_shape)))
    return LoadedModel(model=model.eval(), meta=meta, path=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny subsets and 1 epoch, to check the script")
    parser.add_argument("--light-epochs", type=int, default=_shared.LIGHT_EPOCHS)
    parser.add_argument("--paragon-config", default="gallery.yaml", help="paragon stage config in configs/fashion_mnist")
    parser.add_argument("--results-name", default="baselines", help="docs/results/NAME.{json,md}")
    args = parser.parse_args()
    extra = ["data.max_train_items=3000", "data.max_test_items=500", "train.epochs=1",
             f"output_dir={_shared.BENCH_RUNS}_quick"] if args.quick else []

    configs = {"paragon": _shared.paragon_config(extra, args.paragon_config)}
    for model in _shared.LIGHT_MODELS:
        configs[model] = _shared.light_config(model, "none", args.light_epochs, extra)
    splits = make_splits(configs["paragon"].data)

    rows, timings = [], {}
    for label, cfg in configs.items():
        result = train(cfg, resume=True, splits=splits)
        loaded = load_checkpoint(result.model_path)
        variants = [(label, loaded)]
        if label == "paragon" and loaded.meta.spec.embedding_layer == "backbone":
            variants.append(("paragon_projection_embedding", projection_embedding_variant(loaded)))
        for variant_label, variant in variants:
            rows.append(evaluate_row(variant_label, variant, cfg, result, splits, timings))
        timings[f"train_{label}"] = round(result.train_seconds, 1)
    timings.update(evaluation_speed_check(load_checkpoint(configs["paragon"].run_dir / "model.pt"), splits))
    paragon_flops = rows[0]["query_mflops"]
    for row in rows:
        row["flops_ratio_vs_paragon"] = round(paragon_flops / row["query_mflops"], 1)

    columns = ["method", "variant", "backbone", "recall_at_1", "recall_at_5", "map_at_r", "map", "query_mflops",
               "flops_ratio_vs_paragon", "params", "latency_ms_batch1", "latency_ms_batch256", "epochs",
               "train_seconds", "eval_seconds"]
    results_name = f"{args.results_name}_quick" if args.quick else args.results_name
    write_results(results_name, protocol=splits.protocol, rows=rows,
                  timings_s=timings, columns=columns,
                  title="Baselines: paragon and light models, each trained independently (homogeneous search)",
                  notes="FLOPs = 2 x MACs at batch 1, 1x28x28 input (torch.utils.flop_counter). Latency: median "
                        "CPU forward time. eval_seconds: embedding both sets with the model plus exact FAISS "
                        "kNN and all metrics (Recall@K, mAP, MAP@R, TAR@FAR). variant "
                        "paragon_projection_embedding: the paragon's weights with the embedding taken from "
                        "its projection head instead of its pooled backbone features (not a separate "
                        "training run; its train_seconds are the paragon's).")
    print(open(f"docs/results/{results_name}.md").read())


def evaluate_row(label: str, loaded: LoadedModel, cfg, result, splits, timings: dict) -> dict:
    """Homogeneous evaluation of one model on the protocol, as one results row."""
    started = time.perf_counter()
    evaluation = evaluate_loaded(loaded, loaded, splits, device="cpu")
    eval_seconds = time.perf_counter() - started
    latency = measure_latency(loaded.model, (1, *loaded.model.input_shape), batch_sizes=(1, 256))
    m = evaluation["metrics"]
    timings[f"evaluate_{label}"] = round(eval_seconds, 2)
    return {
        "method": "paragon" if label.startswith("paragon") else "independent", "variant": label,
        "query_model": loaded.meta.model_id, "gallery_model": loaded.meta.model_id,
        "backbone": f"{cfg.model.backbone} {cfg.model.backbone_args or ''}".strip(),
        "recall_at_1": m["recall_at_1"], "recall_at_5": m["recall_at_5"], "recall_at_10": m["recall_at_10"],
        "map_at_r": m["map_at_r"], "map": m["map"],
        "query_mflops": loaded.meta.flops / 1e6, "gallery_mflops": loaded.meta.flops / 1e6,
        "flops_ratio_vs_paragon": None, "params": loaded.meta.params,
        "latency_ms_batch1": latency[1] * 1e3, "latency_ms_batch256": latency[256] * 1e3,
        "train_seconds": round(result.train_seconds, 1), "epochs": cfg.train.epochs,
        "eval_seconds": round(eval_seconds, 2),
    }


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
