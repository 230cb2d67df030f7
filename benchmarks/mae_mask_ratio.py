"""How MAE's cost falls with the mask ratio: the encoder runs on the visible patches only.

For each mask ratio this times one full MAE training step (forward + backward of encoder and
decoder) and the encoder forward alone, on the same model and batch, and prints a Markdown table
with the tokens the encoder saw and the speed-up over ratio 0 (no masking).

    python benchmarks/mae_mask_ratio.py                    # ViT-S/16 at 224, batch 8, CPU
    python benchmarks/mae_mask_ratio.py --preset vit-b16 --batch 64 --device cuda

This is a measurement script, not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

import vitzoo
from vitzoo.objectives import build_objective


def timed(fn: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def mae_step(objective: torch.nn.Module, images: torch.Tensor) -> None:
    objective.zero_grad(set_to_none=True)
    objective(images).loss.backward()


def encoder_forward(model: torch.nn.Module, images: torch.Tensor, tokens_seen: int) -> None:
    """The encoder alone on as many tokens as MAE gave it (prefix + visible patches)."""
    with torch.no_grad():
        tokens, _ = model.embed(images)
        model.encode(tokens[:, :tokens_seen])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="vit-s16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 0.9])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decoder-dim", type=int, default=512)
    parser.add_argument("--decoder-depth", type=int, default=8)
    parser.add_argument("--decoder-heads", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = vitzoo.build(args.preset).to(device)
    images = torch.rand(args.batch, *model.input_size, device=device)
    print(
        f"{args.preset}, batch {args.batch}, decoder {args.decoder_depth}x{args.decoder_dim}, "
        f"{device.type} ({torch.get_num_threads()} threads), median of {args.repeats}\n"
    )
    print(
        "| mask ratio | encoder tokens | encoder fwd (ms) | MAE step fwd+bwd (ms) | step speed-up |"
    )
    print("|---:|---:|---:|---:|---:|")
    baseline = None
    for ratio in args.ratios:
        objective = build_objective(
            {
                "type": "mae",
                "mask_ratio": ratio,
                "decoder_dim": args.decoder_dim,
                "decoder_depth": args.decoder_depth,
                "decoder_heads": args.decoder_heads,
            },
            model,
        ).to(device)
        objective.train()

        step_s = timed(partial(mae_step, objective, images), args.repeats, device)
        visible = objective.last_encoder_tokens
        enc_s = timed(partial(encoder_forward, model, images, visible), args.repeats, device)
        baseline = baseline or step_s
        print(
            f"| {ratio:.2f} | {objective.last_encoder_tokens} | {enc_s * 1e3:.0f} | "
            f"{step_s * 1e3:.0f} | {baseline / step_s:.2f}x |"
        )


if __name__ == "__main__":
    main()
