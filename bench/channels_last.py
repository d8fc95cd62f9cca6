"""Training speed of the memory-format choices (issue 11: the oneDNN AVX2 channels-last fault).

For each model, in one run, interleaved round by round so that machine load hits every variant alike:
  nchw          no channels-last at all
  channels_last model.to(memory_format=torch.channels_last), what training did before the fix
  guarded       hetsearch.models.memory_format.to_channels_last (the fix: strided 1x1 convs whose
                input channels miss oneDNN's 16-channel block run as subsampling + stride-1 conv)
Each sample is the img/s of `--steps` SGD training steps (forward, norm-softmax loss, backward,
update) on a fixed batch of random uint8 images at the model's input size. The reported figure is
the best (highest) over rounds: on a shared machine other processes only ever slow a sample down,
so the fastest of many short interleaved samples estimates the unloaded speed best (the medians and
every sample are in the JSON too). `guarded_vs_before` is guarded / channels_last.

    python bench/channels_last.py                  # -> docs/results/channels_last.{json,md}
    ONEDNN_MAX_CPU_ISA=AVX2 python bench/channels_last.py --name channels_last_avx2 --variants nchw,guarded
(the "channels_last" variant cannot run under AVX2 for ResNet-18 w4: that is the crash.)
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hetsearch.config import TrainRunConfig  # noqa: E402
from hetsearch.models.cost import count_flops  # noqa: E402
from hetsearch.models.embedding_model import create_model_from_config  # noqa: E402
from hetsearch.models.memory_format import to_channels_last  # noqa: E402
from hetsearch.utils.results import write_results  # noqa: E402
from hetsearch.utils.typed_config import load_config  # noqa: E402

CONFIGS = ROOT / "configs" / "fashion_mnist"
# (label, config, overrides): the paragon, the two light query models, and the narrow ResNet whose
# shortcut convolutions (4 and 8 input channels) are the ones the fault hits
MODELS = {
    "paragon": ("gallery.yaml", []),
    "shufflenetv2_x0_5": ("query_shufflenetv2_x0_5.yaml", []),
    "mobilenetv3_small": ("query_mobilenetv3_small.yaml", []),
    "resnet18_w4": ("gallery.yaml", ["model.backbone_args.width=4", "model.embedding_dim=32"]),
}


def _apply(variant: str, model: torch.nn.Module) -> torch.nn.Module:
    if variant == "channels_last":
        model.to(memory_format=torch.channels_last)
    elif variant == "guarded":
        to_channels_last(model)
    return model


def build(label: str, variant: str, num_classes: int = 10):
    config, overrides = MODELS[label]
    cfg = load_config(TrainRunConfig, CONFIGS / config, overrides)
    torch.manual_seed(0)
    model = create_model_from_config(cfg.model, cfg.data, num_classes=num_classes)
    flops = count_flops(model, (1, *model.input_shape))
    rewritten = len(to_channels_last(copy.deepcopy(model)))  # layers the fix computes another way
    model = _apply(variant, model.train())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return model, optimizer, flops, rewritten


def images_per_second(model, optimizer, images, labels, steps: int, channels_last_input: bool) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        x = images.float().div_(255)
        if channels_last_input:
            x = x.contiguous(memory_format=torch.channels_last)
        embeddings = model(x, normalize=False)
        loss = F.cross_entropy(model.classifier(model.classifier_input(embeddings), labels), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--variants", default="nchw,channels_last,guarded")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=3, help="training steps per sample")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--name", default="channels_last")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    generator = torch.Generator().manual_seed(0)
    rows, started = [], time.perf_counter()
    for label in args.models.split(","):
        built = {v: build(label, v) for v in variants}
        shape = built[variants[0]][0].input_shape
        images = torch.randint(0, 256, (args.batch_size, *shape), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, 10, (args.batch_size,), generator=generator)
        for v in variants:  # warm-up: oneDNN primitive creation, allocator
            images_per_second(*built[v][:2], images, labels, 2, v != "nchw")
        samples = {v: [] for v in variants}
        for _ in range(args.rounds):
            for v in variants:
                samples[v].append(images_per_second(*built[v][:2], images, labels, args.steps, v != "nchw"))
        best = {v: max(s) for v, s in samples.items()}
        median = {v: statistics.median(s) for v, s in samples.items()}
        row = {"method": "speed", "label": label, "query_model": label, "gallery_model": None,
               "recall_at_1": None, "map_at_r": None, "query_mflops": round(built[variants[0]][2] / 1e6, 2),
               "gallery_mflops": None, "rewritten_layers": built[variants[0]][3],
               **{f"img_per_s_{v}": round(best[v], 1) for v in variants},
               **{f"median_img_per_s_{v}": round(median[v], 1) for v in variants},
               **{f"samples_{v}": [round(s, 1) for s in samples[v]] for v in variants}}
        if "guarded" in median and "channels_last" in median:
            row["guarded_vs_before"] = round(best["guarded"] / best["channels_last"], 3)
            row["median_guarded_vs_before"] = round(median["guarded"] / median["channels_last"], 3)
        if "guarded" in median and "nchw" in median:
            row["guarded_vs_nchw"] = round(best["guarded"] / best["nchw"], 3)
        rows.append(row)
        print({k: v for k, v in row.items() if not k.startswith("samples_")}, flush=True)
    columns = ["label", "query_mflops", "rewritten_layers", *[f"img_per_s_{v}" for v in variants]]
    columns += [c for c in ("guarded_vs_before", "median_guarded_vs_before", "guarded_vs_nchw") if c in rows[0]]
    load = os.getloadavg()
    write_results(args.name, rows=rows, columns=columns,
                  title="Training speed by memory format (img/s, best of interleaved rounds)",
                  protocol={"batch_size": args.batch_size, "rounds": args.rounds, "steps_per_sample": args.steps,
                            "input": "random uint8 at each model's input size (28x28x1)",
                            "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA", "unset (all kernels)"),
                            "torch_threads": torch.get_num_threads(),
                            "load_average_1_5_15_at_end": [round(x, 2) for x in load]},
                  timings_s={"total": round(time.perf_counter() - started, 1)},
                  notes="Variants: nchw = no channels-last; channels_last = the whole model channels-last "
                        "(training before the fix); guarded = channels-last with strided 1x1 convolutions "
                        "off oneDNN's 16-channel block computed as subsampling + stride-1 convolution (the fix). Where rewritten_layers is 0 the guarded and "
                        "channels_last models are the same computation, so their ratio shows the measurement noise. Each variant's per-round samples are in the JSON.")


if __name__ == "__main__":
    main()
