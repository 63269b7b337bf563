"""Owns batched, on-device data augmentation: random translation, horizontal flip and cutout.

Works on a whole normalised batch at once with per-sample randomness drawn from an explicit
`torch.Generator`, so augmentation never leaves the GPU, never loops over samples in Python and
is reproducible for a seed. Zero is "the mean colour" here, because inputs are already normalised.

Must not know: datasets, specs, models, Optuna, Lightning. Imports torch only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator on `device` seeded with `seed`; pass it to `augment_batch` for reproducible runs."""
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(int(seed))
    return generator


def augment_batch(
    x: torch.Tensor,
    *,
    translate: int,
    flip: bool,
    cutout: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Randomly augment each image of a normalised (B, C, H, W) batch independently.

    translate: shift each image by a whole number of pixels drawn uniformly from [-translate,
        translate] on each axis; uncovered pixels become 0.
    flip: mirror each image left-right with probability 0.5; False never mirrors.
    cutout: zero one square of side `cutout` pixels per image, its centre uniform over the image
        and the square clipped at the borders.
    generator: source of all randomness; must live on x's device (see `make_generator`).

    The result has x's device, dtype and memory format; with nothing to do, x itself is returned.
    """
    if x.dim() != 4:
        raise ValueError(f"augment_batch expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    if translate < 0 or cutout < 0:
        raise ValueError(f"translate and cutout must be >= 0, but got translate={translate}, cutout={cutout}")
    if translate == 0 and not flip and cutout == 0:
        return x

    batch, channels, height, width = x.shape
    device = x.device
    # C == 1 or 1x1 images satisfy both layouts; treat those as the default layout.
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    out = x

    if translate or flip:
        # Source row/column of every output pixel, per sample: one gather does shift and flip.
        rows = torch.arange(height, device=device).expand(batch, height)
        cols = torch.arange(width, device=device).expand(batch, width)
        source = x
        if translate:
            dy = torch.randint(-translate, translate + 1, (batch, 1), generator=generator, device=device)
            dx = torch.randint(-translate, translate + 1, (batch, 1), generator=generator, device=device)
            # Indices into the zero-padded image: content moves by (dy, dx), padding fills the gap.
            rows = rows - dy + translate
            cols = cols - dx + translate
            source = F.pad(x, (translate, translate, translate, translate))
        if flip:
            mirrored = torch.rand((batch, 1), generator=generator, device=device) < 0.5
            cols = torch.where(mirrored, cols.flip(1), cols)
        b = torch.arange(batch, device=device)
        c = torch.arange(channels, device=device)
        if channels_last:
            # Gather in (B, H, W, C) order so the result is already channels-last in memory.
            out = source.permute(0, 2, 3, 1)[
                b.view(-1, 1, 1, 1), rows.view(batch, height, 1, 1), cols.view(batch, 1, width, 1), c.view(1, 1, 1, -1)
            ].permute(0, 3, 1, 2)
        else:
            out = source[
                b.view(-1, 1, 1, 1), c.view(1, -1, 1, 1), rows.view(batch, 1, height, 1), cols.view(batch, 1, 1, width)
            ]

    if cutout:
        cy = torch.randint(0, height, (batch, 1), generator=generator, device=device)
        cx = torch.randint(0, width, (batch, 1), generator=generator, device=device)
        top = cy - cutout // 2
        left = cx - cutout // 2
        r = torch.arange(height, device=device)
        q = torch.arange(width, device=device)
        in_rows = (r >= top) & (r < top + cutout)  # (B, H)
        in_cols = (q >= left) & (q < left + cutout)  # (B, W)
        out = out.masked_fill(in_rows[:, None, :, None] & in_cols[:, None, None, :], 0)

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return out.contiguous(memory_format=fmt)
