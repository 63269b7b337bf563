"""Training throughput: the cnnsearch trainer against a hand-written loop and a DataLoader pipeline.

Three architectures from the default space (hand-picked at about the 10th, 50th and 75th
percentile of its FLOPs at 28x28, see ARCHITECTURES) train on the same data, on the same
device, with the same model initialisation, optimiser, schedule, augmentation and batch size,
in three ways:

  a  trainer   cnnsearch.train.train_candidate (validate=False), reading TrialResult.images_per_sec
  b  plain     a hand-written PyTorch loop over the same device-resident uint8 tensors, batches
               normalised and augmented with augment_batch: the overhead floor
  c  loader    the conventional pipeline: torch.utils.data.DataLoader over a Dataset that
               normalises and augments one sample at a time in __getitem__ (num_workers 0 and 2)

The contenders alternate within each round (a, b, c0, c2 for every architecture), rounds
repeat, and the report gives medians and the per-round paired ratios a/b and a/c. FLOP/s is
count_flops x 3 (forward + backward) x images/s, against a float32 matmul timed here.

    .venv/bin/python bench/throughput.py                      # Fashion-MNIST, 5000 images
    .venv/bin/python bench/throughput.py --quick              # 2000 images, small+medium
    .venv/bin/python bench/throughput.py --data digits
    .venv/bin/python bench/throughput.py --device cuda --train 20000 --epochs 2
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.setup_paths()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cnnsearch.data import to_device  # noqa: E402
from cnnsearch.data.augment import augment_batch, make_generator  # noqa: E402
from cnnsearch.data.device import DeviceData
from cnnsearch.data.load import load_dataset
from cnnsearch.data.split import make_split, subsample
from cnnsearch.model import count_flops  # noqa: E402
from cnnsearch.model.build import build_model
from cnnsearch.spec import Architecture  # noqa: E402
from cnnsearch.train import train_candidate  # noqa: E402
from cnnsearch.train.loop import resolve_device
from cnnsearch.train.module import lr_factor
from cnnsearch.train.plan import plan_for
from cnnsearch.train.result import TrialControl

NAME = "throughput"
SPACE = _common.REPO / "search_spaces" / "default.toml"
VAL_SHARE = 0.1  # of the subsample; only the training images are used here
# Default-space answers shared by every architecture, then each one's own (FixedTrial params).
COMMON_PARAMS = {
    "network.batch_norm": True,
    "network.pool_type": "max",
    "head.dropout": 0.0,
    "train.lr": 3e-3,
    "train.weight_decay": 5e-4,
    "train.label_smoothing": 0.0,
    "augment.translate": 2,
    "augment.cutout": 4,
}
ARCHITECTURES = {
    # ~1 MFLOP at 28x28: around the 10th percentile of default-space candidates
    "small": {
        "network.stages": 1,
        "network.filters": 24,
        "network.width_multiplier": 1.0,
        "network.activation": "relu",
        "stage1.convs": 1,
        "stage1.kernel_size": 5,
        "stage1.pool": True,
        "head.pooling": "gap",
        "head.dense_layers": 0,
        "train.optimizer": "adamw",
        "train.batch_size": 128,
    },
    # ~20 MFLOP: around the median
    "medium": {
        "network.stages": 2,
        "network.filters": 32,
        "network.width_multiplier": 1.5,
        "network.activation": "silu",
        "stage1.convs": 2,
        "stage1.kernel_size": 3,
        "stage1.pool": True,
        "stage2.convs": 1,
        "stage2.kernel_size": 3,
        "stage2.pool": True,
        "head.pooling": "gap",
        "head.dense_layers": 1,
        "head.dense_units": 128,
        "train.optimizer": "sgd",
        "train.batch_size": 64,
    },
    # ~58 MFLOP: around the 75th percentile (the 90th is ~125 MFLOP)
    "large": {
        "network.stages": 3,
        "network.filters": 32,
        "network.width_multiplier": 2.0,
        "network.activation": "relu",
        "stage1.convs": 2,
        "stage1.kernel_size": 3,
        "stage1.pool": True,
        "stage2.convs": 2,
        "stage2.kernel_size": 3,
        "stage2.pool": True,
        "stage3.convs": 2,
        "stage3.kernel_size": 3,
        "stage3.pool": False,
        "head.pooling": "gap",
        "head.dense_layers": 0,
        "train.optimizer": "adamw",
        "train.batch_size": 64,
    },
}
CONTENDERS = ("trainer", "plain", "loader0", "loader2")


def architectures(names: list[str], epochs: int) -> dict[str, Architecture]:
    import optuna

    from cnnsearch.space.parse import load_space

    space = load_space(SPACE)
    return {
        name: space.sample(optuna.trial.FixedTrial({**COMMON_PARAMS, **ARCHITECTURES[name]}), epochs=epochs)
        for name in names
    }


def load_data(spec: str, train_images: int, *, seed: int, device: torch.device) -> DeviceData:
    dataset = load_dataset(spec)
    dataset = subsample(dataset, min(len(dataset.train_labels), round(train_images / (1 - VAL_SHARE))), seed=seed)
    split = make_split(dataset.train_labels, val_fraction=VAL_SHARE, seed=seed)
    return to_device(dataset, split, device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- a: the cnnsearch trainer ------------------------------------------------------------------
def run_trainer(arch: Architecture, data: DeviceData, *, seed: int) -> dict[str, float]:
    started = time.perf_counter()
    result = train_candidate(arch, data, control=TrialControl(seed=seed, validate=False))
    wall = time.perf_counter() - started
    if result.outcome != "complete":
        raise RuntimeError(f"the trainer ended {result.outcome}: {result.reason}")
    return {
        "images_per_sec": result.images_per_sec,
        "seconds": result.train_seconds,
        "call_seconds": wall,
        "final_loss": result.train_loss[-1],
    }


# ---- b and c: one hand-written loop, two sources of batches ----------------------------------------
def autocast_for(device: torch.device):
    # The trainer's choice, from the same DevicePlan: bf16 on a GPU that has it, float32 elsewhere.
    return plan_for(device).autocast_context(device)


def _optimizer(net: torch.nn.Module, arch: Architecture, total_steps: int):
    settings = arch.train
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if settings.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, nesterov=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=settings.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, settings))
    return optimizer, schedule


def plain_fit(
    arch: Architecture, data: DeviceData, batches, *, steps_per_epoch: int, seed: int, device: torch.device
) -> dict[str, float]:
    """Train `arch` for arch.train.epochs over `batches(epoch)`; time the loop only."""
    channels_last = plan_for(device).channels_last
    torch.manual_seed(seed)  # the trainer's initialisation for the same seed
    net = build_model(arch, data.input_shape, data.num_classes).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()
    optimizer, schedule = _optimizer(net, arch, steps_per_epoch * arch.train.epochs)
    smoothing = arch.train.label_smoothing
    images_seen = 0
    loss_sum = torch.zeros((), device=device)
    sync(device)
    started = time.perf_counter()
    for epoch in range(arch.train.epochs):
        loss_sum.zero_()
        for images, labels in batches(epoch):
            with autocast_for(device):
                logits = net(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach()
            images_seen += len(labels)
        final_loss = (loss_sum / steps_per_epoch).item()  # one sync per epoch, as the trainer does
    sync(device)
    seconds = time.perf_counter() - started
    return {
        "images_per_sec": images_seen / seconds,
        "seconds": seconds,
        "call_seconds": seconds,
        "final_loss": final_loss,
    }


def resident_batches(arch: Architecture, data: DeviceData, *, seed: int, device: torch.device):
    """b: shuffled slices of the resident uint8 tensors, normalised and augmented as whole batches."""
    generator = make_generator(seed, device)
    batch = arch.train.batch_size
    count = len(data.train_y)
    steps = max(1, count // batch)
    channels_last = plan_for(device).channels_last
    augment = arch.augment

    def batches(epoch: int):
        order = torch.randperm(count, generator=generator, device=device)
        for start in range(0, steps * batch, batch):
            index = order[start : start + batch]
            images = augment_batch(
                data.normalize(data.train_x[index]),
                translate=augment.translate,
                flip=augment.flip,
                cutout=augment.cutout,
                generator=generator,
            )
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, data.train_y[index]

    return batches, steps


class PerSampleDataset(torch.utils.data.Dataset):
    """c: the textbook Dataset: one image at a time, normalised and augmented in __getitem__."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        mean: np.ndarray,
        std: np.ndarray,
        *,
        translate: int,
        flip: bool,
        cutout: int,
        seed: int,
    ) -> None:
        self.images = images  # uint8 (N, C, H, W), on the host
        self.labels = labels
        self.mean = mean.reshape(-1, 1, 1).astype(np.float32)
        self.std = std.reshape(-1, 1, 1).astype(np.float32)
        self.translate, self.flip, self.cutout = translate, flip, cutout
        self.seed = seed
        self.rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        if self.rng is None:  # one stream per worker process
            info = torch.utils.data.get_worker_info()
            self.rng = np.random.default_rng([self.seed, info.id if info else 0])
        rng = self.rng
        image = (self.images[index].astype(np.float32) / 255.0 - self.mean) / self.std
        _, height, width = image.shape
        if self.translate:
            t = self.translate
            dy, dx = rng.integers(-t, t + 1, size=2)
            padded = np.pad(image, ((0, 0), (t, t), (t, t)))  # 0 = the mean colour after normalising
            image = padded[:, t - dy : t - dy + height, t - dx : t - dx + width]
        if self.flip and rng.random() < 0.5:
            image = image[:, :, ::-1]
        if self.cutout:
            cy, cx = rng.integers(0, height), rng.integers(0, width)
            top, left = max(0, cy - self.cutout // 2), max(0, cx - self.cutout // 2)
            image = image.copy()
            image[:, top : cy - self.cutout // 2 + self.cutout, left : cx - self.cutout // 2 + self.cutout] = 0.0
        return torch.from_numpy(np.ascontiguousarray(image)), int(self.labels[index])


def loader_batches(arch: Architecture, data: DeviceData, *, workers: int, seed: int, device: torch.device):
    dataset = PerSampleDataset(
        data.train_x.cpu().numpy(),
        data.train_y.cpu().numpy(),
        data.mean.cpu().numpy(),
        data.std.cpu().numpy(),
        translate=arch.augment.translate,
        flip=arch.augment.flip,
        cutout=arch.augment.cutout,
        seed=seed,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=arch.train.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )
    channels_last = plan_for(device).channels_last

    def batches(epoch: int):
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, labels.to(device, non_blocking=True)

    return batches, len(loader)


def run_contender(
    name: str, arch: Architecture, data: DeviceData, *, seed: int, device: torch.device
) -> dict[str, float]:
    if name == "trainer":
        return run_trainer(arch, data, seed=seed)
    if name == "plain":
        batches, steps = resident_batches(arch, data, seed=seed, device=device)
    else:
        batches, steps = loader_batches(arch, data, workers=int(name[-1]), seed=seed, device=device)
    return plain_fit(arch, data, batches, steps_per_epoch=steps, seed=seed, device=device)


# ---- the device's peak ---------------------------------------------------------------------------
def matmul_peak(device: torch.device, *, repeats: int = 5) -> float:
    """Best float32 FLOP/s of a large square matmul on `device` (the achievable peak)."""
    size = 8192 if device.type == "cuda" else 2048
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the models train in fp32/bf16, not tf32
    best = math.inf
    for attempt in range(repeats + 1):
        sync(device)
        started = time.perf_counter()
        a @ b
        sync(device)
        if attempt:
            best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


# ---- main ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="fashion-mnist", help="fashion-mnist (28x28) or digits (8x8)")
    parser.add_argument("--train", type=int, default=5000, help="training images (a stratified subset)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per fit")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; every contender runs once per round")
    parser.add_argument("--archs", default="small,medium,large", help="comma list of: " + ", ".join(ARCHITECTURES))
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads on CPU (default: torch's own choice)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2000 images, small and medium only")
    parser.add_argument("--full", action="store_true", help="20000 images, 2 epochs, 5 rounds")
    args = parser.parse_args()
    if args.quick:
        args.train, args.archs = min(args.train, 2000), "small,medium"
    if args.full:
        args.train, args.epochs, args.rounds = 20000, 2, 5
    names = [name.strip() for name in args.archs.split(",") if name.strip()]
    unknown = [name for name in names if name not in ARCHITECTURES]
    if unknown:
        parser.error(f"unknown architecture {unknown[0]!r}; valid: {', '.join(ARCHITECTURES)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    data = load_data(args.data, args.train, seed=args.seed, device=device)
    archs = architectures(names, args.epochs)
    flops = {
        name: count_flops(build_model(arch, data.input_shape, data.num_classes), data.input_shape)
        for name, arch in archs.items()
    }
    _common.echo(
        f"{args.data} {tuple(data.train_x.shape)} on {device}, {torch.get_num_threads()} threads; "
        + ", ".join(f"{name} {arch.compact()} {flops[name] / 1e6:.1f} MFLOP" for name, arch in archs.items())
    )

    # Warm-up (discarded): imports, allocator and kernel caches, DataLoader workers' first fork.
    warm = archs[names[0]]
    for contender in CONTENDERS:
        run_contender(contender, warm, data, seed=args.seed, device=device)
    peak = matmul_peak(device)

    measured: dict[tuple[str, str], list[dict[str, float]]] = {}
    for round_index in range(args.rounds):
        for name, arch in archs.items():
            for contender in CONTENDERS:
                result = run_contender(contender, arch, data, seed=args.seed + round_index, device=device)
                measured.setdefault((name, contender), []).append(result)
                _common.echo(
                    f"round {round_index + 1} {name:6s} {contender:8s} {result['images_per_sec']:9.0f} img/s "
                    f"({result['seconds']:.2f} s, loss {result['final_loss']:.3f})"
                )
        peak = max(peak, matmul_peak(device))  # the best seen: the least disturbed by other load

    rows, table = [], []
    for name, arch in archs.items():
        speed = {c: [r["images_per_sec"] for r in measured[(name, c)]] for c in CONTENDERS}
        med = {c: _common.median(v) for c, v in speed.items()}
        ratio = {c: _common.median([a / o for a, o in zip(speed["trainer"], speed[c])]) for c in CONTENDERS[1:]}
        call = _common.median([r["call_seconds"] for r in measured[(name, "trainer")]])
        achieved = flops[name] * 3 * med["trainer"]
        rows.append(
            {
                "data": args.data,
                "device": str(device),
                "threads": torch.get_num_threads(),
                "train_images": len(data.train_y),
                "epochs": args.epochs,
                "rounds": args.rounds,
                "arch": name,
                "compact": arch.compact(),
                "batch_size": arch.train.batch_size,
                "mflops": flops[name] / 1e6,
                **{f"{c}_img_s": med[c] for c in CONTENDERS},
                "trainer_call_s": call,
                "ratio_trainer_plain": ratio["plain"],
                "ratio_trainer_loader0": ratio["loader0"],
                "ratio_trainer_loader2": ratio["loader2"],
                "trainer_gflops": achieved / 1e9,
                "plain_gflops": flops[name] * 3 * med["plain"] / 1e9,
                "peak_gflops": peak / 1e9,
                "trainer_pct_peak": 100 * achieved / peak,
            }
        )
        table.append(
            [
                name,
                f"{arch.compact()} (batch {arch.train.batch_size})",
                flops[name] / 1e6,
                med["trainer"],
                med["plain"],
                med["loader0"],
                med["loader2"],
                ratio["plain"],
                ratio["loader0"],
                ratio["loader2"],
                f"{achieved / 1e9:.2f} ({100 * achieved / peak:.1f}%)",
            ]
        )
    _common.append_rows(NAME, rows)
    body = (
        f"{args.data}, {len(data.train_y)} training images {tuple(data.train_x.shape[1:])}, {args.epochs} epoch(s) per fit, "
        f"{args.rounds} rounds (contenders alternate within each round; medians; ratios are medians of per-round "
        f"pairs), device {device}, {torch.get_num_threads()} torch thread(s). Measured matmul peak "
        f"{peak / 1e9:.1f} GFLOP/s float32.\n\n"
        + _common.markdown_table(
            [
                "arch",
                "candidate",
                "MFLOP/img",
                "a trainer img/s",
                "b plain img/s",
                "c loader w=0",
                "c loader w=2",
                "a/b",
                "a/c0",
                "a/c2",
                "trainer GFLOP/s (% peak)",
            ],
            table,
        )
        + "\n\na/b < 1 is the trainer's overhead over the plain loop; a/c > 1 is what resident batches "
        "gain over a per-sample DataLoader."
    )
    _common.append_section(f"throughput: trainer vs plain loop vs DataLoader ({args.data}, {device})", body)
    print(body)


if __name__ == "__main__":
    main()
