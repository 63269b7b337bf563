"""Owns reading the weights a search kept (runs/<name>/weights/trial_N.pt) for an export: whether
they load and are the chosen network's, and the network built from them with the normalisation of
the training split they were trained on. A damaged file or another network's (a trial number given
out again) is one sentence, never a traceback.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from cnnsearch.data.dataset import Dataset
from cnnsearch.data.device import normalization_stats
from cnnsearch.data.split import load_split
from cnnsearch.errors import UserError, first_line
from cnnsearch.export.choose import _Candidate
from cnnsearch.model.build import build_model
from cnnsearch.run.folder import RunDir

# What torch.load raises for a weights file that is missing, cut short (an empty file after a power
# cut: weights are written without fsync) or not a checkpoint at all.
_UNREADABLE = (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError)


def readable_weights(path: Path, network: str) -> bool:
    """Whether the search's weights at `path` load and are `network`'s (else retrained, not a traceback)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except _UNREADABLE:
        return False
    return isinstance(saved, dict) and saved.get("network") in (None, "", network)


def search_weights(
    run: RunDir, dataset: Dataset, candidate: _Candidate
) -> tuple[nn.Module, list[float], list[float], int, int]:
    """The weights the search kept, with the normalisation of the training split they were trained on.

    Returns (net, mean, std, training images, epoch after which the weights were saved).
    """
    path = run.weights_file(candidate.weights_trial)
    split = load_split(run.split_file)
    train_images = dataset.train_images[torch.from_numpy(split.train_indices)]
    mean, std = normalization_stats(train_images)
    net = build_model(candidate.arch, dataset.input_shape, dataset.num_classes)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("network") not in (None, "", candidate.arch.canonical_hash()):  # a reused trial number's
            raise ValueError("they are another network's")
        net.load_state_dict(saved["state_dict"])
    except (*_UNREADABLE, KeyError, TypeError) as error:
        first = first_line(error)
        raise UserError(
            f"{path} does not hold the weights of trial {candidate.number} ({first}); drop --no-retrain to retrain it"
        ) from None
    return net, mean, std, len(split.train_indices), int(saved.get("epoch", 0))
