"""Which library should decode streamed training images? CPU time per image, by backend and format.

    python bench/decode_backends.py [--images 600] [--repeats 5]

The streaming path (`hetsearch.data.loader`) decodes each batch's files in DataLoader workers with
PIL (`hetsearch.data.fileset.decode_many`: open, alpha compositing, resize/crop to the model's
input). Before choosing it we compare, on the same files, single-threaded CPU time per image of:

- ``hetsearch``: our decoder as the trainer runs it (PIL, composited and fitted to ``--size``);
- ``pil``: PIL open + convert to RGB only (the floor for PIL);
- ``torchvision``: `torchvision.io.decode_image` (libpng / libjpeg-turbo) + `resize` to ``--size``.

on 64 px PNGs (bench/streaming.py's generated images, or generated here) and on the same images
as 256 px JPEGs (a typical product photo catalogue), where PIL's JPEG draft mode (DCT scaling)
decodes at reduced size. The training step that consumes them costs ~2.4 ms per 64 px image on
this machine (docs/results/streaming.md), so the decoder is compared against that budget.
Libraries not measured: NVIDIA DALI (GPU decoding; no CPU wheel on PyPI), FFCV (own dataset
format, needs a C toolchain and a conversion pass), WebDataset (tar shards: helps sequential I/O on
network storage, not decoding; orthogonal to the choice of decoder).

Results: docs/results/decode_backends.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def make_images(folder: Path, count: int, size: int, fmt: str) -> list[str]:
    """``count`` seeded colour images with structure (gradients, stripes, noise) in ``folder``."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(count):
        freq, phase = rng.uniform(2, 12), rng.uniform(0, 6.28, 3)
        rgb = np.stack([np.sin(freq * (xx + yy * c) + phase[c]) for c in range(3)], -1)
        pixels = (127 + 100 * rgb + rng.normal(0, 12, rgb.shape)).clip(0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.{fmt}"
        Image.fromarray(pixels).save(path, quality=90) if fmt == "jpg" else Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def backends(size: int):
    import torch
    import torchvision
    from PIL import Image
    import numpy as np

    from hetsearch.data.fileset import DecodeSpec, decode_many

    spec = DecodeSpec(channels=3, image_size=size)

    def hetsearch_decode(paths):
        decode_many(paths, spec)

    def pil_decode(paths):
        for p in paths:
            with Image.open(p) as img:
                np.asarray(img.convert("RGB"))

    def torchvision_decode(paths):
        for p in paths:
            image = torchvision.io.decode_image(torchvision.io.read_file(p), mode=torchvision.io.ImageReadMode.RGB)
            torchvision.transforms.functional.resize(image, [size, size], antialias=True)

    torch.set_num_threads(1)
    return {"hetsearch": hetsearch_decode, "pil": pil_decode, "torchvision": torchvision_decode}


def measure(decoders: dict, paths: list[str], repeats: int) -> dict[str, float]:
    """Median over ``repeats`` of CPU ms per image; backends interleaved so load affects all alike."""
    for p in paths:  # page cache warm: decoding, not the disk, is measured
        Path(p).read_bytes()
    samples = {name: [] for name in decoders}
    for _ in range(repeats):
        for name, decode in decoders.items():
            started = time.process_time()
            decode(paths)
            samples[name].append(1000 * (time.process_time() - started) / len(paths))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=64, help="model input size the images are fitted to")
    parser.add_argument("--step-ms", type=float, default=2.4,
                        help="training CPU ms per image to compare against (docs/results/streaming.md)")
    args = parser.parse_args()

    from hetsearch.utils.results import write_results

    decoders = backends(args.size)
    rows, timings = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, side in (("png", 64), ("jpg", 256)):
            started = time.perf_counter()
            paths = make_images(Path(tmp) / f"{fmt}{side}", args.images, side, fmt)
            result = measure(decoders, paths, args.repeats)
            timings[f"{fmt}_{side}"] = round(time.perf_counter() - started, 1)
            for name, ms in result.items():
                rows.append({"method": name, "label": f"{name}, {side} px {fmt.upper()}", "query_model": None,
                             "gallery_model": None, "recall_at_1": None, "map_at_r": None, "query_mflops": None,
                             "gallery_mflops": None, "format": fmt, "source_px": side,
                             "cpu_ms_per_img": round(ms, 3), "share_of_training_step": round(ms / args.step_ms, 3)})
                print(rows[-1]["label"], rows[-1]["cpu_ms_per_img"], flush=True)
    best = {fmt: min((r for r in rows if r["format"] == fmt), key=lambda r: r["cpu_ms_per_img"]) for fmt in ("png", "jpg")}
    ours = {fmt: next(r for r in rows if r["format"] == fmt and r["method"] == "hetsearch") for fmt in ("png", "jpg")}
    notes = " ".join(
        f"{fmt.upper()}: ours {ours[fmt]['cpu_ms_per_img']:.3f} ms/img ({100 * ours[fmt]['share_of_training_step']:.0f}% "
        f"of a {args.step_ms} ms training step), fastest {best[fmt]['method']} {best[fmt]['cpu_ms_per_img']:.3f}."
        for fmt in ("png", "jpg"))
    write_results("decode_backends", rows=rows, timings_s=timings,
                  protocol={"images": args.images, "repeats": f"median of {args.repeats}, backends interleaved",
                            "threads": 1, "fitted_to_px": args.size, "page_cache": "warm",
                            "measure": "process CPU time per image (decode + fit to the model input)"},
                  columns=["label", "cpu_ms_per_img", "share_of_training_step"],
                  title="Decoding backends for streamed training images", notes=notes)
    print(notes)


if __name__ == "__main__":
    main()
