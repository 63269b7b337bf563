"""Training speed of the device plans on this CPU: float32, channels-last, bf16 autocast, both.

The default space's three starters train 1 epoch each (validation included, as in a search) on a
stratified Fashion-MNIST subset (or digits), under each plan in turn, round after round; the
report gives each plan's median images per second and its median paired speed-up over float32
(the plans alternate within a round, so the ratio is measured side by side). The CPU default
(train/plan.py) follows from it: on a CPU with AMX, channels-last + bf16.

    .venv/bin/python bench/cpu_plans.py                     # Fashion-MNIST, 6,000 images, 2 rounds
    .venv/bin/python bench/cpu_plans.py --data digits --epochs 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.setup_paths()

from cnnsearch.data.device import to_device  # noqa: E402
from cnnsearch.data.load import load_dataset  # noqa: E402
from cnnsearch.data.split import make_split, subsample  # noqa: E402
from cnnsearch.space.parse import load_space  # noqa: E402
from cnnsearch.space.starters import starter_architectures  # noqa: E402
from cnnsearch.train.loop import train_candidate  # noqa: E402
from cnnsearch.train.plan import FLOAT32, DevicePlan, cpu_has_bf16_matrix_units  # noqa: E402
from cnnsearch.train.result import TrialControl  # noqa: E402

NAME = "cpu_plans"
PLANS = {
    "float32": FLOAT32,
    "channels-last": DevicePlan(channels_last=True),
    "bf16": DevicePlan(autocast="bf16"),
    "channels-last + bf16": DevicePlan(channels_last=True, autocast="bf16"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="fashion-mnist", help="fashion-mnist or digits")
    parser.add_argument("--images", type=int, default=6000, help="subset size (train + validation)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    dataset = load_dataset(args.data)
    if len(dataset.train_labels) > args.images:
        dataset = subsample(dataset, args.images, seed=0)
    data = to_device(dataset, make_split(dataset.train_labels, seed=0), "cpu")
    starters = starter_architectures(load_space("default"))
    speed: dict[tuple[int, str], list[float]] = {}
    accuracy: dict[tuple[int, str], list[float]] = {}
    rows = []
    for round_ in range(args.rounds):
        for number, arch in enumerate(starters, start=1):
            for name, plan in PLANS.items():
                control = TrialControl(seed=round_, plan=plan, measure_latency=False)
                result = train_candidate(arch.with_epochs(args.epochs), data, control=control)
                speed.setdefault((number, name), []).append(result.images_per_sec)
                accuracy.setdefault((number, name), []).append(result.val_acc[-1])
                _common.echo(f"round {round_} starter {number} {name}: {result.images_per_sec:.0f} images/s")
                rows.append({"round": round_, "starter": number, "plan": name, "images_per_sec": result.images_per_sec})
    _common.append_rows(NAME, rows)
    table = []
    for number in range(1, len(starters) + 1):
        base = speed[(number, "float32")]
        for name in PLANS:
            ratios = [s / b for s, b in zip(speed[(number, name)], base, strict=True)]
            table.append(
                (
                    f"starter {number}",
                    name,
                    _common.median(speed[(number, name)]),
                    _common.median(ratios),
                    _common.median(accuracy[(number, name)]),
                )
            )
    body = _common.markdown_table(
        ("network", "plan", "images/s (median)", "x float32 (paired median)", "val acc after the epochs"), table
    )
    body += (
        f"\n\n{args.data}, {len(data.train_y)} training images, {args.epochs} epoch(s) per fit, {args.rounds} rounds;"
        f" AMX on this CPU: {cpu_has_bf16_matrix_units()}."
    )
    print(body)
    _common.append_section(f"CPU device plans: training speed ({args.data})", body)


if __name__ == "__main__":
    main()
