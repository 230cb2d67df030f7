"""Native resolution against resize-to-square, and packed against padded batches, at one patch budget.

For a folder of mixed-aspect images (generated when none is given), one NaViT is timed three ways
on the same images, each image allowed the same number of patches (``--budget``):

* ``square``: every image resized to the square of ``budget`` patches (its aspect ratio lost),
  one ``(B, C, S, S)`` tensor -- the usual pipeline;
* ``native packed``: every image resized, aspect ratio kept, to at most ``budget`` patches
  (``vitzoo.data.native_size``: what ``data.max_patches`` does) and the batch packed greedily into
  rows of ``budget`` tokens with a block-diagonal mask (``packing: greedy``);
* ``native padded``: the same images, one per row, padded to the longest (``packing: padded``:
  how timm's and Hugging Face's NaFlex models take a batch).

Per mode: inference images/s (``torch.inference_mode``, eval) and training images/s (forward,
cross-entropy, backward, AdamW step), the tokens the model computes (rows x row length) against
the tokens that carry an image, the padding share, and the attention cost (sum over rows of
length^2, relative to ``square``). Method as ``compare_peers.py``: warm-up, modes interleaved in
rotating order per repetition, medians; ``--clock cpu`` counts CPU-seconds of the process instead
of wall time (steadier on a shared machine). A measurement script, not a test::

    python benchmarks/native_resolution.py                          # generated folder, CPU
    python benchmarks/native_resolution.py --data DIR --budget 256 --batch 32 --preset navit-b16
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vitzoo
from vitzoo.components.packing import PackedLayout
from vitzoo.data.native import native_size

#: (width, height) aspect ratios of the generated folder: photos, phones, panoramas, documents.
ASPECTS = [(1, 1), (4, 3), (3, 4), (16, 9), (9, 16), (2, 1), (1, 2), (3, 1), (1, 3), (3, 2)]
MEAN, STD = 0.5, 0.5


def generate_folder(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` JPEGs of the :data:`ASPECTS`, 200-900 px on the long side, random content."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        aw, ah = ASPECTS[i % len(ASPECTS)]
        long_side = int(rng.integers(200, 900))
        scale = long_side / max(aw, ah)
        size = (max(16, round(aw * scale)), max(16, round(ah * scale)))
        pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i:04d}.jpg", quality=90)
    return root


def read_folder(root: Path) -> list[Image.Image]:
    suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes)
    if not paths:
        raise SystemExit(f"{root}: no images")
    return [Image.open(p).convert("RGB") for p in paths]


def to_tensor(image: Image.Image, height: int, width: int) -> torch.Tensor:
    resized = image.resize((width, height), Image.Resampling.BICUBIC)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    return (torch.from_numpy(array).permute(2, 0, 1) - MEAN) / STD


def prepare(images: list[Image.Image], patch: int, budget: int, max_grid, upscale: bool = True):
    """The square tensors and the native-size list of the same images, and the aspect-ratio
    distortion the square resize causes (mean |log(new aspect / old aspect)|)."""
    side = math.isqrt(budget) * patch
    square = torch.stack([to_tensor(im, side, side) for im in images])
    native = []
    for im in images:
        h, w = native_size(im.height, im.width, (patch, patch), budget, max_grid, upscale=upscale)
        native.append(to_tensor(im, h, w))
    distortion = statistics.mean(abs(math.log(im.height / im.width)) for im in images)
    return square, native, distortion


def build(args: argparse.Namespace, packing: str, budget: int) -> torch.nn.Module:
    overrides = {"packing": packing, "pack_length": budget, "num_classes": args.classes}
    for name in ("dim", "depth", "num_heads"):
        if getattr(args, name):
            overrides[name] = getattr(args, name)
    torch.manual_seed(0)
    return vitzoo.build(args.preset, **overrides)


def token_counts(model: torch.nn.Module, batch) -> dict[str, float]:
    """Tokens with an image, tokens computed, padding share, attention cost (sum of L^2)."""
    if isinstance(batch, torch.Tensor):
        n = batch.shape[0] * (batch.shape[2] // model.native_resolution.patch_size[0]) ** 2
        return {
            "useful": n,
            "computed": n,
            "padding": 0.0,
            "attention": float(n // len(batch)) ** 2 * len(batch),
        }
    patch = model.native_resolution.patch_size[0]
    lengths = [(im.shape[1] // patch) * (im.shape[2] // patch) for im in batch]
    arrange = PackedLayout.greedy if model.config.packing == "greedy" else PackedLayout.padded
    layout = arrange(lengths, model.config.pack_length)
    computed = layout.num_rows * layout.row_length
    return {
        "useful": sum(lengths),
        "computed": computed,
        "padding": layout.padding / computed,
        "attention": float(layout.num_rows * layout.row_length**2),
    }


def train_step(model, optimizer, batch, labels) -> None:
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(batch), labels).backward()
    optimizer.step()


def seconds(fn: Callable[[], None], clock: Callable[[], float] = time.perf_counter) -> float:
    start = clock()
    fn()
    return clock() - start


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder of images (default: generate one)")
    parser.add_argument("--images", type=int, default=64, help="images to generate")
    parser.add_argument("--preset", default="navit-b16")
    parser.add_argument("--dim", type=int, default=192, help="override (0: the preset's)")
    parser.add_argument("--depth", type=int, default=6, help="override (0: the preset's)")
    parser.add_argument("--num-heads", dest="num_heads", type=int, default=3)
    parser.add_argument("--budget", type=int, default=256, help="patches per image")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--keep-small",
        action="store_true",
        help="native modes never enlarge an image (fewer patches for small images, NaViT-style); "
        "default: every image scaled to fill the budget (SigLIP 2 NaFlex's rule)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: images per CPU-second of this process (steadier on a shared machine)",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser.parse_args()


MODES = (("square", "greedy"), ("native packed", "greedy"), ("native padded", "padded"))


def same_models(args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    """The three modes' models with the same weights."""
    modes = {name: build(args, packing, args.budget) for name, packing in MODES}
    state = modes["square"].state_dict()
    for model in modes.values():
        model.load_state_dict(state)
    return modes


def time_modes(
    modes: dict[str, torch.nn.Module], inputs: dict[str, list], labels, args
) -> dict[str, dict[str, list[float]]]:
    """Inference and training seconds per mode, repeats interleaved (the order rotates)."""
    optimizers = {n: torch.optim.AdamW(m.parameters(), lr=1e-5) for n, m in modes.items()}

    def infer(name: str) -> None:
        modes[name].eval()
        with torch.inference_mode():
            for batch in inputs[name]:
                modes[name](batch)

    def train(name: str) -> None:
        modes[name].train()
        for batch in inputs[name]:
            train_step(modes[name], optimizers[name], batch, labels)

    names = list(modes)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    for name in names:  # warm-up
        infer(name)
        train(name)
    timings: dict[str, dict[str, list[float]]] = {n: {"infer": [], "train": []} for n in names}
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            timings[name]["infer"].append(seconds(lambda n=name: infer(n), clock))
            timings[name]["train"].append(seconds(lambda n=name: train(n), clock))
    return timings


def result_rows(modes, inputs, timings, count: int) -> list[dict]:
    """Per mode: images/s, tokens per image, padding and attention cost against square."""
    base_attention = sum(token_counts(modes["square"], b)["attention"] for b in inputs["square"])
    rows = []
    for name in modes:
        counts = [token_counts(modes[name], b) for b in inputs[name]]
        useful = sum(c["useful"] for c in counts)
        computed = sum(c["computed"] for c in counts)
        rows.append(
            {
                "mode": name,
                "infer_images_per_s": count / statistics.median(timings[name]["infer"]),
                "train_images_per_s": count / statistics.median(timings[name]["train"]),
                "tokens_per_image": useful / count,
                "computed_tokens_per_image": computed / count,
                "padding_share": 1 - useful / computed,
                "attention_cost_vs_square": sum(c["attention"] for c in counts) / base_attention,
                "timings_s": timings[name],
            }
        )
    return rows


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data or generate_folder(Path(tmp), args.images)
        images = read_folder(folder)
    modes = same_models(args)
    reference = modes["square"]
    patch = reference.native_resolution.patch_size[0]
    square, native, distortion = prepare(
        images, patch, args.budget, reference.native_resolution.max_grid, not args.keep_small
    )
    batches = [slice(i, i + args.batch) for i in range(0, len(images) - args.batch + 1, args.batch)]
    inputs = {
        "square": [square[s] for s in batches],
        "native packed": [native[s] for s in batches],
        "native padded": [native[s] for s in batches],
    }
    labels = torch.randint(args.classes, (args.batch,), generator=torch.Generator().manual_seed(0))
    timings = time_modes(modes, inputs, labels, args)
    count = len(batches) * args.batch
    report = {
        "images": len(images),
        "timed_images": count,
        "batch": args.batch,
        "budget_patches": args.budget,
        "patch": patch,
        "model": {
            "preset": args.preset,
            "dim": args.dim or None,
            "depth": args.depth or None,
            "num_heads": args.num_heads or None,
            "params": sum(p.numel() for p in reference.parameters()),
        },
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "torch": torch.__version__,
        "square_aspect_distortion": distortion,
        "native_sizing": "keep small images" if args.keep_small else "fill the budget",
        "rows": result_rows(modes, inputs, timings, count),
    }
    print(markdown(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def markdown(report: dict) -> str:
    lines = [
        f"{report['timed_images']} images (of {report['images']}), batch {report['batch']}, "
        f"budget {report['budget_patches']} patches of {report['patch']} px, "
        f"{report['model']['params'] / 1e6:.1f}M-parameter NaViT, {report['threads']} threads, "
        f"{report['clock']} clock; "
        f"native sizing: {report['native_sizing']}; square resize distorts the aspect ratio "
        f"by a mean |log| of {report['square_aspect_distortion']:.2f}",
        "",
        "| mode | infer img/s | train img/s | tokens/img | computed/img | padding | attention cost |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['mode']} | {row['infer_images_per_s']:.1f} | {row['train_images_per_s']:.1f} "
            f"| {row['tokens_per_image']:.0f} | {row['computed_tokens_per_image']:.0f} "
            f"| {row['padding_share']:.1%} | {row['attention_cost_vs_square']:.2f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
