"""Tests for cnnsearch.augment: shapes, per-sample randomness, seeding, and what each op may do."""

from __future__ import annotations

import pytest
import torch

from cnnsearch.data.augment import augment_batch, make_generator


def batch(b: int = 16, c: int = 3, h: int = 12, w: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_shape_dtype_and_layout_kept(dtype: torch.dtype) -> None:
    x = batch().to(dtype)
    out = augment_batch(x, translate=2, flip=True, cutout=4, generator=make_generator(0))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert out.is_contiguous()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    out_cl = augment_batch(x_cl, translate=2, flip=True, cutout=4, generator=make_generator(0))
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out_cl, out)  # layout changes nothing but memory order


def test_nothing_to_do_returns_input() -> None:
    x = batch()
    assert augment_batch(x, translate=0, flip=False, cutout=0, generator=make_generator(0)) is x


def test_identical_images_get_different_augmentations() -> None:
    x = batch(b=1).expand(8, -1, -1, -1).contiguous()
    for kwargs in ({"translate": 3, "flip": False, "cutout": 0}, {"translate": 0, "flip": False, "cutout": 4}):
        out = augment_batch(x, generator=make_generator(1), **kwargs)
        distinct = {out[i].numpy().tobytes() for i in range(len(out))}
        assert len(distinct) > 1, kwargs


def test_flip_false_never_flips_and_true_flips_some() -> None:
    x = batch(b=64)
    assert torch.equal(augment_batch(x, translate=0, flip=False, cutout=0, generator=make_generator(0)), x)
    out = augment_batch(x, translate=0, flip=True, cutout=0, generator=make_generator(0))
    mirrored = torch.flip(x, dims=[3])
    flipped = [bool(torch.equal(out[i], mirrored[i])) for i in range(64)]
    kept = [bool(torch.equal(out[i], x[i])) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept))  # each sample is one or the other
    assert 10 < sum(flipped) < 54  # p = 0.5: both kinds appear


def test_same_seed_same_output_other_seed_differs() -> None:
    x = batch()
    kwargs = {"translate": 2, "flip": True, "cutout": 3}
    a = augment_batch(x, generator=make_generator(5), **kwargs)
    b = augment_batch(x, generator=make_generator(5), **kwargs)
    c = augment_batch(x, generator=make_generator(6), **kwargs)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("size", [1, 4, 5])
def test_cutout_zeroes_one_clipped_square(size: int) -> None:
    x = torch.ones(200, 2, 9, 8)
    out = augment_batch(x, translate=0, flip=False, cutout=size, generator=make_generator(3))
    saw_clipped = False
    for sample in out:
        assert torch.equal(sample[0], sample[1])  # same square in every channel
        zero = sample[0] == 0
        rows = zero.any(dim=1).nonzero().flatten()
        cols = zero.any(dim=0).nonzero().flatten()
        assert len(rows) >= 1 and len(cols) >= 1  # centre is inside, so something is cut
        height, width = len(rows), len(cols)
        assert height <= size and width <= size
        assert rows[-1] - rows[0] + 1 == height and cols[-1] - cols[0] + 1 == width  # contiguous
        assert int(zero.sum()) == height * width  # a filled rectangle
        saw_clipped |= height * width < size * size
        assert torch.all(sample[:, ~zero] == 1)
    if size > 1:
        assert saw_clipped  # squares near the border get clipped


def test_translate_moves_content_at_most_t_pixels() -> None:
    t = 2
    x = torch.zeros(300, 1, 11, 11)
    x[:, 0, 5, 5] = 1.0
    out = augment_batch(x, translate=t, flip=False, cutout=0, generator=make_generator(4))
    shifts = set()
    for sample in out:
        ys, xs = (sample[0] == 1).nonzero(as_tuple=True)
        assert len(ys) == 1 and float(sample.sum()) == 1.0  # moved, never duplicated or lost
        dy, dx = int(ys[0]) - 5, int(xs[0]) - 5
        assert abs(dy) <= t and abs(dx) <= t
        shifts.add((dy, dx))
    assert len(shifts) == (2 * t + 1) ** 2  # every shift in [-t, t]^2 occurs


def test_translate_fills_with_zeros() -> None:
    x = torch.ones(50, 1, 6, 6)
    out = augment_batch(x, translate=2, flip=False, cutout=0, generator=make_generator(0))
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert (out == 0).any()


def test_negative_sizes_rejected() -> None:
    with pytest.raises(ValueError, match="translate"):
        augment_batch(batch(), translate=-1, flip=False, cutout=0)
