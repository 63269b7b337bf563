"""The `space` commands: check, show and sample a search-space file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from cnnsearch.cli.app import info, out, space_app
from cnnsearch.errors import UserError


@space_app.command("check")
def space_check(
    file: Annotated[
        Path, typer.Argument(help="Space file, or a shipped space by name: default, tiny, cifar, sequence.")
    ],
    sample: Annotated[
        int, typer.Option("--sample", help="Also sample N candidates and report the infeasible share.")
    ] = 0,
    input_shape: Annotated[str, typer.Option("--input", help="Input shape CxHxW for --sample.")] = "1x28x28",
    classes: Annotated[int, typer.Option("--classes", help="Number of classes for --sample.")] = 10,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Check against this dataset's input shape and classes (instead of --input/--classes), as a "
            "search does before it starts: refused when no sampled candidate can be trained on it.",
        ),
    ] = None,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="Where dataset files are, for --data.")] = None,
) -> None:
    """Validate a space file; with --sample, report the share of infeasible candidates and why."""
    from cnnsearch.space.parse import load_space

    if sample < 0:
        raise UserError(f"--sample must be 0 or more, but got {sample}")
    _check_classes(classes)
    shape = _input_shape(input_shape)
    loaded = load_space(file)
    if not loaded.searched:
        info(f"note: {file} searches nothing (every key is fixed): a search of it trains one network (--trials 1)")
    if data is not None:
        from cnnsearch.data.load import load_dataset
        from cnnsearch.space.inspect import FIT_SAMPLES, require_trainable

        dataset = load_dataset(data, data_dir=data_dir)
        report = require_trainable(loaded, dataset.input_shape, dataset.num_classes, data=data, n=sample or FIT_SAMPLES)
        out.print(Text(f"{file}: valid ({_keys(loaded.searched)}); fits {data}"), highlight=False)
        out.print(Text(report.summary()), highlight=False)
        return
    out.print(Text(f"{file}: valid ({_keys(loaded.searched)})"), highlight=False)
    if sample:
        from cnnsearch.space.inspect import feasibility

        report = feasibility(loaded, shape, classes, n=sample)
        out.print(Text(report.summary()), highlight=False)


def _keys(searched: int) -> str:
    return f"{searched} searched key{'s' if searched != 1 else ''}"


def _check_classes(classes: int) -> None:
    if classes < 2:
        raise UserError(f"--classes must be at least 2, but got {classes}")


def _input_shape(text: str) -> tuple[int, int, int]:
    from cnnsearch.spec import parse_input_shape

    try:
        return parse_input_shape(text)
    except ValueError as error:
        raise UserError(f"--input: {error}") from None


@space_app.command("show")
def space_show(
    file: Annotated[
        Path, typer.Argument(help="Space file, or a shipped space by name: default, tiny, cifar, sequence.")
    ],
) -> None:
    """Print which form a space uses (stages or a layer sequence) and its dimensions as a table."""
    from rich.table import Table

    from cnnsearch.space.parse import load_space

    loaded = load_space(file)
    table = Table(title=str(file))
    for column in ("parameter", "kind", "values", "meaning"):
        table.add_column(column)
    for row in loaded.rows():
        table.add_row(*(Text(str(cell)) for cell in row))
    out.print(Text(loaded.form_line()), highlight=False)
    out.print(table)
    if loaded.starters:
        from cnnsearch.space.starters import starter_architectures

        out.print(Text("starters, trained first by a new run (--no-starters skips them):"), highlight=False)
        for number, arch in enumerate(starter_architectures(loaded), start=1):
            out.print(Text(f"  {number}. {arch.compact()}"), highlight=False)


@space_app.command("sample")
def space_sample(
    file: Annotated[
        Path, typer.Argument(help="Space file, or a shipped space by name: default, tiny, cifar, sequence.")
    ],
    n: Annotated[int, typer.Option("--n", help="How many candidates.")] = 5,
    input_shape: Annotated[str, typer.Option("--input", help="Input shape CxHxW.")] = "1x28x28",
    classes: Annotated[int, typer.Option("--classes", help="Number of classes.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
) -> None:
    """Print sampled candidates with their compact form, parameters and FLOPs (or why infeasible)."""
    from cnnsearch.space.inspect import sample_candidates
    from cnnsearch.space.parse import load_space

    if n < 1:
        raise UserError(f"--n must be at least 1, but got {n}")
    _check_classes(classes)
    loaded = load_space(file)
    shape = _input_shape(input_shape)
    out.print(sample_candidates(loaded, shape, classes, n=n, seed=seed))
