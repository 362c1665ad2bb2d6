"""The compute ceiling for the throughput benchmark: N training steps of alexnet-tui's AlexNet on one
batch already in memory (random uint8 images through the same to_model_input), with what the engine
uses: fused Adam, channels_last, the same loss, autocast as `--amp auto` picks. No data loading, no
reporting, no checkpoints: what (b) would reach if nothing but the step cost time.
`--amp` and `--no-channels-last` as alexnet-tui's (the throughput script passes its own on).

    python benchmarks/ceiling.py --steps 20 --batch-size 32 --image-size 227   # prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from alexnet_tui.engine.device import resolve_amp, resolve_device
from alexnet_tui.engine.tensors import to_model_input
from alexnet_tui.model import AlexNet


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20 on CPU, 300 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2 / 30)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=227)
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--amp", default="auto", help="as alexnet-tui's --amp (auto: bf16 where the engine picks it)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    steps = args.steps or (300 if cuda else 20)
    warmup = args.warmup if args.warmup is not None else (30 if cuda else 2)
    amp = resolve_amp(args.amp, device)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    torch.manual_seed(0)
    memory_format = torch.contiguous_format if args.no_channels_last else torch.channels_last
    model = AlexNet(args.num_classes, args.image_size).to(device, memory_format=memory_format).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    size = (args.batch_size, 3, args.image_size, args.image_size)
    images = torch.randint(0, 256, size, dtype=torch.uint8)
    labels = torch.randint(0, args.num_classes, (args.batch_size,))
    if cuda:
        images, labels = images.pin_memory(), labels.pin_memory()
    flips = torch.rand(args.batch_size) < 0.5

    def step() -> torch.Tensor:
        inputs = to_model_input(images, device, flips, memory_format)
        targets = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(inputs)
            loss = criterion(logits.float(), targets) / len(targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        last = step()
    last.item()  # waits for the queued steps on CUDA
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "steps": steps,
                "seconds_per_step": seconds / steps,
                "images_per_sec": steps * args.batch_size / seconds,
                "device": str(device),
                "amp": str(amp),
            }
        )
    )


if __name__ == "__main__":
    main()
