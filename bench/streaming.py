"""Streaming vs in-memory training from a large image folder: peak memory and throughput.

    python bench/streaming.py [--root runs/streaming_bench/images] [--steps 150] [--quick]
    python bench/streaming.py --data cifar10 [--root EXPORT]   # the 50,000 CIFAR-10 training photos

``--data cifar10`` measures the same two paths on the exported CIFAR-10 folder (32 px PNGs,
``hetsearch data export cifar10 EXPORT``, made when missing; default runs/bench_photos/cifar10_export)
with the photo gallery model (ResNet-18 width 16, CIFAR stem); results docs/results/streaming_cifar10.*.

1. ``--generate`` (once; skipped when the folder is complete): ROOT/{train,test}/CLASS/*.png,
   200,000 training + 2,000 test 64 px colour PNGs in 100 classes (class = base colour and stripe
   frequency, plus seeded noise), written by 2 processes.
2. Each path trains the same small model for the same number of steps in its own process (so peak
   memory is its own), with ``data.storage=stream`` (files decoded in DataLoader workers) and
   ``data.storage=memory`` (all 200,000 images decoded into one uint8 tensor first).
   Throughput = training images / training seconds (the trainer's epoch time; the memory path's
   decoding before training is reported separately as ``memory_load_s``).
   Peak memory is sampled every 0.1 s over the process and its workers: ``peak_rss_gb`` is the
   peak of the summed RSS (an upper bound: forked workers share pages with the trainer) and
   ``peak_pss_gb`` the peak of the summed PSS (shared pages counted once).

Results: docs/results/streaming[_cifar10].{json,md} (``--quick``: runs/streaming_bench/quick/ instead).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CLASSES = 100
TRAIN_PER_CLASS = 2000
TEST_PER_CLASS = 20
SIZE = 64


# ---------------------------------------------------------------------------- data

def _class_style(c: int):
    import numpy as np

    rng = np.random.default_rng(10_000 + c)
    return rng.integers(30, 226, 3), rng.uniform(1.5, 9.0), rng.uniform(0, 6.28, 3)


def _write_shard(args) -> int:
    import numpy as np
    from PIL import Image

    root, split, classes, per_class, seed = args
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    written = 0
    for c in classes:
        base, freq, phase = _class_style(c)
        folder = Path(root) / split / f"c{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed * 1_000_003 + c)
        for i in range(per_class):
            path = folder / f"{i:05d}.png"
            if path.exists():
                continue
            angle = rng.uniform(0, 3.14)
            wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle))[..., None] / freq + phase)
            img = base[None, None, :] * 0.7 + 70 * wave + rng.normal(0, 14, (SIZE, SIZE, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").save(path)
            written += 1
    return written


def generate(root: Path, processes: int = 2) -> float:
    """Write the folder (resumable: existing files are kept); returns seconds."""
    from multiprocessing import Pool

    started = time.perf_counter()
    jobs = [(str(root), "train", list(range(k, CLASSES, processes * 4)), TRAIN_PER_CLASS, 0)
            for k in range(processes * 4)]
    jobs += [(str(root), "test", list(range(CLASSES)), TEST_PER_CLASS, 1)]
    with Pool(processes) as pool:
        written = sum(pool.imap_unordered(_write_shard, jobs))
    print(f"generated {written} files in {time.perf_counter() - started:.0f} s", flush=True)
    return time.perf_counter() - started


def complete(root: Path) -> bool:
    return all(len(list((root / "train" / f"c{c:03d}").glob("*.png"))) == TRAIN_PER_CLASS
               for c in range(CLASSES)) if (root / "train").is_dir() else False


# ---------------------------------------------------------------------------- memory sampling

def _tree(pid: int) -> list[int]:
    pids, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            for task in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{task}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
                pids += kids
                frontier += kids
        except OSError:
            pass
    return pids


def _kb(path: str, key: str) -> int:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """Samples the summed RSS and PSS of this process and its descendants."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.peak_rss_kb, self.peak_pss_kb = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = _tree(os.getpid())
            self.peak_rss_kb = max(self.peak_rss_kb, sum(_kb(f"/proc/{p}/status", "VmRSS:") for p in pids))
            self.peak_pss_kb = max(self.peak_pss_kb, sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------- one path (child process)

def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the DataLoader workers)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_path(args) -> dict:
    import torch

    from hetsearch.config import TrainRunConfig
    from hetsearch.data import make_splits
    from hetsearch.train import Trainer
    from hetsearch.utils.typed_config import from_dict

    out = Path(args.runs) / args.path
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cfg = from_dict(TrainRunConfig, {
        "name": args.path, "output_dir": str(Path(args.runs)),
        "data": {"source": "image_folder", "root": str(args.root), "channels": 3, "image_size": args.image_size,
                 "storage": args.path, "num_workers": args.workers, "val_fraction": 0.0,
                 "max_train_items": args.max_items},
        "model": {"backbone": args.backbone, "backbone_args": json.loads(args.backbone_args), "embedding_dim": 64},
        "train": {"epochs": 1, "batch_size": args.batch_size, "lr": 0.05, "max_steps_per_epoch": args.steps,
                  "warmup_epochs": 0.2},
        "runtime": {"device": "cpu", "num_threads": args.threads, "progress": False, "eval_every": 0},
    })
    with PeakMemory() as memory:
        started = time.perf_counter()
        splits = make_splits(cfg.data)
        load_s = time.perf_counter() - started
        trainer = Trainer(cfg, splits=splits)
        cpu_before = _cpu_seconds()
        result = trainer.fit()
        cpu_train = _cpu_seconds() - cpu_before
    record = result.history[-1]
    return {"path": args.path, "storage": splits.protocol["storage"], "train_items": len(splits.train),
            "images": record["images"], "train_seconds": record["epoch_seconds"],
            "img_per_s": record["images_per_second"], "load_s": round(load_s, 1),
            "peak_rss_gb": round(memory.peak_rss_kb / 1e6, 3), "peak_pss_gb": round(memory.peak_pss_kb / 1e6, 3),
            "model_id": result.meta.model_id, "mflops": round(result.meta.flops / 1e6, 2),
            "cpu_ms_per_img": round(1e3 * cpu_train / max(1, record["images"]), 2),
            "torch_threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------- driver

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("generated", "cifar10"), default="generated",
                        help="generated: 200,000 synthetic 64 px PNGs; cifar10: the exported CIFAR-10 photos")
    parser.add_argument("--root", default=None, help="the image folder (default runs/streaming_bench/images; "
                                                     "cifar10: runs/bench_photos/cifar10_export)")
    parser.add_argument("--runs", default="runs/streaming_bench/runs")
    parser.add_argument("--generate", action="store_true", help="write the image folder first (resumable)")
    parser.add_argument("--steps", type=int, default=150, help="training steps per path")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers of the streaming path (default: the trainer's, data.num_workers=null)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the trainer")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--backbone-args", default=None,
                        help='default {"width": 16, "small_stem": false}; cifar10: {"width": 16} (the photo gallery)')
    parser.add_argument("--image-size", type=int, default=None, help=argparse.SUPPRESS)  # child process
    parser.add_argument("--max-items", type=int, default=None, help="use only N training images (quick tries)")
    parser.add_argument("--cold-cache", action="store_true",
                        help="drop the OS page cache before each path (root), so both start reading from disk")
    parser.add_argument("--quick", action="store_true", help="20 steps on 5,000 images; results under runs/")
    parser.add_argument("--path", choices=("stream", "memory"), help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.quick:
        args.steps, args.max_items = 20, args.max_items or 5000
    data_defaults(args)
    root = Path(args.root)
    if args.path:  # child: one path, JSON on the last line
        print(json.dumps(run_path(args)), flush=True)
        return
    timings = {}
    if args.data == "cifar10":
        timings["export"] = round(export_cifar10(root), 1)
    elif args.generate or not complete(root):
        timings["generate"] = round(generate(root), 1)
    rows = {}
    args.load_before = os.getloadavg()[0]
    for path in ("stream", "memory"):
        cmd = [sys.executable, __file__, "--path", path, "--root", str(root), "--runs", args.runs,
               "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--threads", str(args.threads), "--backbone", args.backbone, "--backbone-args", args.backbone_args,
               "--image-size", str(args.image_size), "--data", args.data]
        if args.max_items:
            cmd += ["--max-items", str(args.max_items)]
        if args.workers is not None:
            cmd += ["--workers", str(args.workers)]
        if args.cold_cache:
            drop_page_cache()
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            sys.exit(f"{path} path failed:\n{done.stderr[-3000:]}")
        rows[path] = json.loads(done.stdout.strip().splitlines()[-1])
        timings[f"{path}_total"] = round(time.perf_counter() - started, 1)
        print(path, rows[path], flush=True)
    write(args, rows, timings)


def data_defaults(args) -> None:
    """--root, --image-size, --backbone-args defaults of the data set."""
    photos = args.data == "cifar10"
    args.root = args.root or ("runs/bench_photos/cifar10_export" if photos else "runs/streaming_bench/images")
    args.image_size = args.image_size or (32 if photos else SIZE)
    args.backbone_args = args.backbone_args or ('{"width": 16}' if photos else '{"width": 16, "small_stem": false}')


def export_cifar10(root: Path) -> float:
    """`hetsearch data export cifar10 ROOT` when the folder is missing; seconds."""
    started = time.perf_counter()
    if not (root / "train").is_dir():
        subprocess.run([sys.executable, "-m", "hetsearch.cli", "data", "export", "cifar10", str(root)], check=True,
                       cwd=ROOT)
    return time.perf_counter() - started


def drop_page_cache() -> None:
    """Both paths start from the same (cold) cache: the first path must not warm it for the second."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError as exc:
        sys.exit(f"--cold-cache: cannot write /proc/sys/vm/drop_caches ({exc}); run as root or leave out --cold-cache")


def write(args, rows: dict, timings: dict) -> None:
    from hetsearch.utils.results import write_results

    s, m = rows["stream"], rows["memory"]
    ratio = s["img_per_s"] / m["img_per_s"]
    nice = os.nice(0)
    table = [{"method": p, "query_model": r["model_id"], "gallery_model": None, "recall_at_1": None,
              "map_at_r": None, "query_mflops": r["mflops"], "gallery_mflops": None, "storage": r["storage"],
              "train_items": r["train_items"], "images_trained": r["images"], "img_per_s": r["img_per_s"],
              "decode_before_training_s": r["load_s"], "peak_rss_gb": r["peak_rss_gb"],
              "peak_pss_gb": r["peak_pss_gb"], "cpu_ms_per_img": r.get("cpu_ms_per_img")}
             for p, r in (("stream", s), ("memory", m))]
    data = (f"{s['train_items']} CIFAR-10 training photos, {args.image_size} px PNGs exported to {args.root} "
            "(ROOT/{train,test}/CLASS/*), 10 classes" if args.data == "cifar10" else
            f"{s['train_items']} generated {SIZE} px colour PNGs, ROOT/{{train,test}}/CLASS/*, {CLASSES} classes")
    protocol = {"data": data, "model": f"{args.backbone} {args.backbone_args} at {args.image_size} px, embedding 64",
                "steps": args.steps, "batch_size": args.batch_size, "stream_workers": args.workers if args.workers is not None else
                f"trainer default on CPU: cores // 2 = {max(1, (os.cpu_count() or 1) // 2)}",
                "torch_threads": args.threads, "nice": nice,
                "page_cache": "dropped before each path (cold: files read from disk)" if args.cold_cache
                              else "as found (the first path may warm it for the second)",
                "machine_sharing": "2 cores; throughput depends on other jobs' load at the time (quiet when "
                                   "load_average_before is low)",
                "load_average_before": round(args.load_before, 2),
                "throughput": "training images / trainer epoch seconds (max_steps_per_epoch steps); "
                              "cpu_ms_per_img: CPU time (trainer + its DataLoader workers) per training image, "
                              "less sensitive to other jobs than wall-clock throughput",
                "peak_memory": "summed over the process and its DataLoader workers, sampled every 0.1 s"}
    notes = (f"Streaming throughput is {ratio:.2f}x the in-memory path's (target >= 0.8); streaming peak RSS "
             f"{s['peak_rss_gb']:.2f} GB (target <= 3), in-memory {m['peak_rss_gb']:.2f} GB after decoding "
             f"{m['train_items']} images for {m['load_s']:.0f} s before its first step.")
    extra = {"peak_rss_gb": s["peak_rss_gb"], "peak_pss_gb": s["peak_pss_gb"], "img_per_s_streaming": s["img_per_s"],
             "img_per_s_memory": m["img_per_s"], "throughput_ratio": round(ratio, 3),
             "memory_path_peak_rss_gb": m["peak_rss_gb"], "memory_load_s": m["load_s"]}
    results_dir = Path(args.runs).parent / "quick" if args.quick else ROOT / "docs" / "results"
    name = "streaming_cifar10" if args.data == "cifar10" else "streaming"
    write_results(name, protocol=protocol, rows=table, timings_s=timings,
                  columns=["method", "storage", "train_items", "images_trained", "img_per_s", "cpu_ms_per_img",
                           "decode_before_training_s", "peak_rss_gb", "peak_pss_gb", "query_mflops"],
                  title=f"Streaming vs in-memory training from a {s['train_items'] // 1000}k-image folder", notes=notes,
                  extra=extra,
                  results_dir=results_dir)
    print(notes)


if __name__ == "__main__":
    main()
