"""Owns warm start: reading `--enqueue` files and `--from-run`, and queueing their
architectures through the space's inverse (`space.sample.params_for`), so only candidates the
space can express are queued.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cnnsearch.errors import UserError
from cnnsearch.outcomes import TrialRecord
from cnnsearch.run.folder import RunDir
from cnnsearch.search.settings import SearchSettings
from cnnsearch.space.parse import SearchSpace
from cnnsearch.space.sample import params_for
from cnnsearch.words import count


def warm_start_params(space: SearchSpace, arch_dicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Optuna params that make `space.sample` give each architecture, where the space allows it."""
    from cnnsearch.spec import Architecture

    found = []
    for raw in arch_dicts:
        arch = Architecture.from_dict(raw)
        params = params_for(space, arch)
        if params is not None:
            found.append(params)
    return found


def read_warm_start(settings: SearchSettings) -> list[dict[str, Any]]:
    """Architectures to train first, from --enqueue files and --from-run; bad input is refused."""
    return [arch for _, arch in warm_start_sources(settings)]


def warm_start_sources(settings: SearchSettings) -> list[tuple[str, dict[str, Any]]]:
    """(where it comes from, architecture) of each candidate to train first; bad input is refused."""
    import optuna

    sources: list[tuple[str, dict[str, Any]]] = []
    for path in settings.enqueue:
        file = Path(path)
        if not file.is_file():
            raise UserError(
                f"--enqueue {path}: file not found; pass an architecture JSON (runs/NAME/trials/N.json or an export's model.json)"
            )
        try:
            raw = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserError(f"--enqueue {path}: not valid JSON ({error})") from None
        # A trial record keeps it under "arch", an export's model.json under "architecture".
        found = next(
            (raw[key] for key in ("arch", "architecture") if isinstance(raw, dict) and isinstance(raw.get(key), dict)),
            raw,
        )
        if not isinstance(found, dict) or not isinstance(found.get("layers"), list):
            raise UserError(
                f"--enqueue {path}: no architecture in it; pass runs/NAME/trials/N.json or an export's model.json"
            )
        sources.append((str(path), found))
    if settings.from_run:
        source = RunDir(settings.runs_dir, settings.from_run)
        source_study = source.load_study()
        ranked = [
            t
            for t in source_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if TrialRecord.of(t).arch is not None and TrialRecord.of(t).outcome == "complete"
        ]
        ranked.sort(key=lambda t: t.values[0], reverse=True)
        sources += [(f"trial {t.number} of run {settings.from_run}", TrialRecord.of(t).arch) for t in ranked[:10]]
    return sources


def _same_params(study: Any, params: dict[str, Any]) -> Any:
    """The trial that already has these parameters (queued or tried), as Optuna's
    `enqueue_trial(skip_if_exists=True)` sees it; None if there is none."""
    for trial in study.get_trials(deepcopy=False):
        tried = trial.system_attrs.get("fixed_params") or trial.params
        if all(tried.get(name) == value for name, value in params.items()):
            return trial
    return None


def enqueue_warm_start(study: Any, space: SearchSpace, settings: SearchSettings) -> list[str]:
    """Queue known candidates (from --enqueue files or --from-run) to be trained first; one line
    that says how many were queued, and which were skipped and why."""
    import optuna

    from cnnsearch.outcomes import trial_outcome
    from cnnsearch.spec import Architecture

    sources = warm_start_sources(settings)
    if not sources:
        return []
    queued, repeats, misfits = 0, [], []
    waiting = (optuna.trial.TrialState.WAITING,)
    for label, raw in sources:
        params = params_for(space, Architecture.from_dict(raw))
        if params is None:
            misfits.append(label)
            continue
        earlier = _same_params(study, params)
        if earlier is not None:  # Optuna would skip it without a word
            repeats.append(f"{label} (trial {earlier.number}, {trial_outcome(earlier)})")
            continue
        before = len(study.get_trials(deepcopy=False, states=waiting))
        study.enqueue_trial(params, user_attrs={"warm_start": True}, skip_if_exists=True)
        if len(study.get_trials(deepcopy=False, states=waiting)) > before:
            queued += 1
        else:
            repeats.append(f"{label} (already in the study)")
    line = f"queued {count(queued, 'known candidate')} to train first"
    if repeats:
        line += f"; skipped {len(repeats)} already in the study: {', '.join(repeats)}"
    if misfits:
        line += f"; skipped {len(misfits)} that do not fit this space: {', '.join(misfits)}"
    return [line]


def starters_wanted(settings: SearchSettings, sampler: str) -> bool:
    """--starters / --no-starters; by default a new run of every sampler but random starts with
    the space's starters (random search stays the unbiased baseline it is asked for), unless it
    is warm-started from another run (--fork, --from-run), whose own trials come first."""
    if settings.starters is not None:
        return settings.starters
    return sampler != "random" and not settings.from_run and not settings.fork


def starter_misfit(space: SearchSpace, arch: Any, input_shape: tuple[int, int, int], num_classes: int) -> str:
    """Why a starter cannot train on this data ('' when it can): its shapes, or the constraints."""
    from cnnsearch.errors import InfeasibleArchitecture
    from cnnsearch.spec import count_params, forward_flops

    try:
        params, flops = count_params(arch, input_shape, num_classes), forward_flops(arch, input_shape, num_classes)
    except InfeasibleArchitecture as error:
        return str(error)
    if space.max_params is not None and params > space.max_params:
        return f"{params:,} parameters, over max_params {space.max_params:,}"
    if space.max_flops is not None and flops > space.max_flops:
        return f"{flops:,.0f} FLOPs, over max_flops {space.max_flops:,.0f}"
    return ""


def enqueue_starters(study: Any, space: SearchSpace, info: Any) -> list[str]:
    """Queue the space's [[starter]] candidates that fit the run's data (`info`: its RunInfo),
    behind any warm start; one line saying what was queued and what was skipped and why."""
    import optuna

    from cnnsearch.space.starters import starter_architectures

    shape = (int(info.input_shape[0]), int(info.input_shape[1]), int(info.input_shape[2]))
    waiting = (optuna.trial.TrialState.WAITING,)
    queued, misfits = 0, []
    for number, (params, arch) in enumerate(zip(space.starters, starter_architectures(space), strict=True), start=1):
        misfit = starter_misfit(space, arch, shape, max(2, len(info.class_names)))
        if misfit:
            misfits.append(f"starter {number} ({misfit})")
            continue
        if _same_params(study, params) is not None:  # already queued or tried (e.g. by --enqueue)
            continue
        before = len(study.get_trials(deepcopy=False, states=waiting))
        study.enqueue_trial(params, user_attrs={"starter": number}, skip_if_exists=True)
        queued += len(study.get_trials(deepcopy=False, states=waiting)) - before
    line = (
        f"queued the space's {count(queued, 'starter')} to train first (known-good networks; --no-starters skips them)"
        if queued
        else ""
    )
    if misfits:
        skipped = f"skipped {count(len(misfits), 'starter')} that cannot train on {info.data}: {', '.join(misfits)}"
        line = f"{line}; {skipped}" if line else skipped
    return [line] if line else []


def enqueue_warm_start_for(
    run: RunDir, space: SearchSpace, settings: SearchSettings, *, info: Any = None, new_run: bool = False
) -> list[str]:
    """Warm start (--enqueue, --from-run), then, for a new run (`info`: its RunInfo), the space's starters."""
    starters = new_run and info is not None and bool(space.starters) and starters_wanted(settings, info.sampler)
    if not (settings.enqueue or settings.from_run or starters):
        return []
    study = run.load_study()
    notes = enqueue_warm_start(study, space, settings) if settings.enqueue or settings.from_run else []
    if starters:
        notes += enqueue_starters(study, space, info)
    elif settings.starters and not new_run:
        notes.append(f"--starters: run {run.name!r} exists; starters are queued only when a run is created")
    return notes
