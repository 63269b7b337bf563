"""The hand-written peer of bench/versus.py: the CNN search a user writes in an afternoon with
Optuna + PyTorch Lightning, in the style of Optuna's Lightning example.

A DataLoader over tensors (TensorDataset), TPE, a median pruner fed by a Lightning callback that
reports the validation accuracy after every epoch, 1-3 conv layers (filters and kernel searched
per layer, then a searched dropout, dense width and learning rate), a fixed number of epochs,
Adam. When the time left no longer fits another trial and the final retrain, it stops starting
trials, retrains the best configuration on train+validation for the same epochs and saves it as
TorchScript. It never reads the test set: bench/versus.py scores the saved model.

The budget holds as it holds for cnnsearch: once one trial has completed, a running trial is cut
(Lightning's `max_time`) when it reaches the time the final retrain of the best one needs; a cut
trial is reported as `interrupted`, as cnnsearch reports one its deadline cut, and not scored. (Without the cut, one 387-second trial took the peer
to 712 s of a 600-second budget.)

It does not import cnnsearch: it reads the IDX files itself. `--indices FILE` (an .npz with
`train` and `val`, indices into the official training pool) makes it train and validate on
exactly the images another contender uses; without it, `--train-images N` draws a stratified
subset and carves a 15% validation split out of it.

    .venv/bin/python bench/peers/optuna_lightning.py --budget 600 --train-images 10000 --out /tmp/peer
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import optuna
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
VAL_FRACTION = 0.15
BATCH_SIZE = 128
RETRAIN_SHARE = 1 / (1 - VAL_FRACTION)  # train+validation is this many times the training split


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or plain) as a uint8 array shaped by its header."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_pool(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The official training pool: (N, 1, 28, 28) uint8 images and int64 labels."""
    images = read_idx(next(data_dir.glob("train-images*")))
    labels = read_idx(next(data_dir.glob("train-labels*")))
    return images[:, None], labels.astype(np.int64)


def choose_images(labels: np.ndarray, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices into the pool: from --indices, else a stratified subset and split."""
    if args.indices:
        with np.load(args.indices) as saved:
            return saved["train"], saved["val"]
    from sklearn.model_selection import train_test_split

    pool = np.arange(len(labels))
    if args.train_images and args.train_images < len(labels):
        pool, _ = train_test_split(pool, train_size=args.train_images, stratify=labels, random_state=args.seed)
    train, val = train_test_split(pool, test_size=VAL_FRACTION, stratify=labels[pool], random_state=args.seed)
    return np.sort(train), np.sort(val)


class Net(pl.LightningModule):
    """1-3 x (conv, batch norm, ReLU, 2x2 max pool), dropout, one hidden dense layer, Adam."""

    def __init__(self, params: dict, *, input_shape: tuple[int, int, int], classes: int) -> None:
        super().__init__()
        self.lr = params["lr"]
        channels, size = input_shape[0], input_shape[1]
        layers: list[nn.Module] = []
        for i in range(params["n_layers"]):
            filters, kernel = params[f"filters_{i}"], params[f"kernel_{i}"]
            layers += [
                nn.Conv2d(channels, filters, kernel, padding=kernel // 2),
                nn.BatchNorm2d(filters),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels, size = filters, size // 2
        layers += [
            nn.Flatten(),
            nn.Dropout(params["dropout"]),
            nn.Linear(channels * size * size, params["dense"]),
            nn.ReLU(),
            nn.Dropout(params["dropout"]),
            nn.Linear(params["dense"], classes),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean(), on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class PruningCallback(pl.Callback):
    """Reports val_acc to the trial after each validation; stops training when the pruner says so.

    As optuna-integration's PyTorchLightningPruningCallback does: the trainer is told to stop and
    the objective raises TrialPruned after fit returns (an exception inside fit would be Lightning's).
    """

    def __init__(self, trial: optuna.trial.Trial) -> None:
        self.trial = trial
        self.pruned = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get("val_acc")
        if value is None:
            return
        self.trial.report(float(value), step=trainer.current_epoch)
        if self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True


def suggest(trial: optuna.trial.Trial) -> dict:
    params: dict = {"n_layers": trial.suggest_int("n_layers", 1, 3)}
    for i in range(params["n_layers"]):
        params[f"filters_{i}"] = trial.suggest_categorical(f"filters_{i}", [16, 32, 64, 128])
        params[f"kernel_{i}"] = trial.suggest_categorical(f"kernel_{i}", [3, 5])
    params["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
    params["dense"] = trial.suggest_int("dense", 32, 512, log=True)
    params["lr"] = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    return params


def trainer(
    epochs: int, callbacks: list[pl.Callback], *, validate: bool = True, max_s: float | None = None
) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        max_time=None if max_s is None else {"seconds": max(1.0, max_s)},
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if validate else 0,
        callbacks=callbacks,
    )


def retrain_s(records: list[dict]) -> float | None:
    """Predicted seconds of the final retrain of the best completed trial (None: none completed):
    its trial's time, on train+validation, with a quarter to spare."""
    done = [r for r in records if r["state"] == "complete"]
    if not done:
        return None
    best = max(done, key=lambda r: r["val_acc"])
    return (best["end_s"] - best["start_s"]) * RETRAIN_SHARE * 1.25


def was_cut(fit: pl.Trainer, epochs: int, *, pruned: bool) -> bool:
    """Whether max_time stopped the fit before its last step. (Lightning counts an epoch the
    timer cut short as done, so the epoch count cannot tell a cut in the last epoch.)"""
    return not pruned and fit.global_step < epochs * fit.num_training_batches


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=600, help="Seconds from start to the saved model.")
    parser.add_argument("--train-images", type=int, default=10_000, help="Training subset (0: all 60,000).")
    parser.add_argument("--indices", help=".npz with train and val indices into the training pool.")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--epochs", type=int, default=5, help="Epochs per trial and for the final retrain.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="Folder for model.ts and peer.json.")
    args = parser.parse_args(argv)
    started, started_unix = time.monotonic(), time.time()  # trial times count from here
    warnings.filterwarnings("ignore", ".*does not have many workers.*")  # num_workers=0 over resident tensors
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pl.seed_everything(args.seed, verbose=False)

    images, labels = load_pool(args.data_dir)
    train_idx, val_idx = choose_images(labels, args)
    x = torch.from_numpy(images[np.concatenate([train_idx, val_idx])].astype(np.float32) / 255)
    mean, std = float(x[: len(train_idx)].mean()), float(x[: len(train_idx)].std())
    x = (x - mean) / std
    y = torch.from_numpy(labels[np.concatenate([train_idx, val_idx])])
    train_set = TensorDataset(x[: len(train_idx)], y[: len(train_idx)])
    val_set = TensorDataset(x[len(train_idx) :], y[len(train_idx) :])
    input_shape = tuple(images.shape[1:])
    records: list[dict] = []

    def objective(trial: optuna.trial.Trial) -> float:
        begun = time.monotonic()
        params = suggest(trial)
        model = Net(params, input_shape=input_shape, classes=10)
        pruning = PruningCallback(trial)
        reserve = retrain_s(records)
        max_s = None if reserve is None else started + args.budget - reserve - begun
        fit = trainer(args.epochs, [pruning], max_s=max_s)
        fit.fit(
            model,
            DataLoader(train_set, batch_size=BATCH_SIZE, shuffle=True),
            DataLoader(val_set, batch_size=1024),
        )
        accuracy = float(fit.callback_metrics.get("val_acc", float("nan")))
        cut = was_cut(fit, args.epochs, pruned=pruning.pruned)
        records.append(
            {
                "number": trial.number,
                "state": "pruned" if pruning.pruned else "interrupted" if cut else "complete",
                "start_s": begun - started,
                "end_s": time.monotonic() - started,
                "val_acc": accuracy,
                "epochs": fit.current_epoch,
                "params": sum(p.numel() for p in model.parameters()),
            }
        )
        if pruning.pruned:
            raise optuna.TrialPruned(f"pruned at epoch {fit.current_epoch}")
        if cut:
            raise optuna.TrialPruned(f"cut at the deadline after epoch {fit.current_epoch}")
        return accuracy

    def stop_in_time(study: optuna.study.Study, trial: optuna.trial.FrozenTrial) -> None:
        # Another trial, then the retrain of the best one on train+validation, must fit the budget.
        # Trial times vary tenfold with the architecture: plan for a slow one, not the median.
        durations = [r["end_s"] - r["start_s"] for r in records]
        longest = max(records, key=lambda r: r["end_s"] - r["start_s"])
        retrain = retrain_s(records) or (longest["end_s"] - longest["start_s"]) * RETRAIN_SHARE * 1.25
        if time.monotonic() - started + float(np.quantile(durations, 0.8)) + retrain > args.budget:
            study.stop()

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    )
    study.optimize(objective, timeout=args.budget, callbacks=[stop_in_time])
    search_s = time.monotonic() - started

    best = study.best_trial
    final = Net(best.params, input_shape=input_shape, classes=10)
    pl.seed_everything(args.seed, verbose=False)
    trainer(args.epochs, [], validate=False).fit(
        final, DataLoader(TensorDataset(x, y), batch_size=BATCH_SIZE, shuffle=True)
    )
    args.out.mkdir(parents=True, exist_ok=True)
    model_path = args.out / "model.ts"
    torch.jit.save(torch.jit.script(final.net.cpu().eval()), str(model_path))
    pruned = [r for r in records if r["state"] == "pruned"]
    cut = [r for r in records if r["state"] == "interrupted"]
    summary = {
        "trials_finished": len(records) - len(cut),  # as for cnnsearch: a trial the deadline cut did not finish
        "trials_complete": len(records) - len(pruned) - len(cut),
        "trials_pruned": len(pruned),
        "trial_seconds": sum(r["end_s"] - r["start_s"] for r in records),
        "pruned_seconds": sum(r["end_s"] - r["start_s"] for r in pruned),
        "search_seconds": search_s,
        "started_unix": started_unix,
        "total_seconds": time.monotonic() - started,
        "best_trial": best.number,
        "best_val_acc": best.value,
        "best_params_config": best.params,
        "params": sum(p.numel() for p in final.parameters()),
        "model": str(model_path),
        "mean": [mean],
        "std": [std],
        "train_images": len(train_idx),
        "val_images": len(val_idx),
        "epochs": args.epochs,
        "trials": records,
    }
    (args.out / "peer.json").write_text(json.dumps(summary, indent=1))
    print(
        f"{len(records)} trials ({len(pruned)} pruned) in {search_s:.0f} s; best val acc {best.value:.4f}; "
        f"final model {model_path} ({summary['params']:,} params) after {summary['total_seconds']:.0f} s"
    )


if __name__ == "__main__":
    main()
