"""Owns a run's life before its first trial: creating it, resuming it, forking it, joining it.

`open_search` is what `cnnsearch search` calls: it fills in the defaults of a new run, checks
every setting, and creates the run (or checks that a resume asks for the same run) before any
trial starts. Nothing is written until every check has passed: a bad option leaves no half run.
The study holds run.json and the space too (`publish_run`), so a worker on another machine can
join a shared search (`join_run`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from cnnsearch.errors import UserError
from cnnsearch.run.folder import RunDir, RunInfo, check_run_name, check_runs_dir, write_atomic
from cnnsearch.run.storage import describe_storage, rdb_storage
from cnnsearch.search.progress import counted_trials
from cnnsearch.search.settings import (
    DEFAULT_TRIALS,
    NEW_RUN_DEFAULTS,
    RUN_DEFINING,
    UNLIMITED_TRIALS,
    SearchSettings,
    default_run_name,
    versions,
)
from cnnsearch.search.strategies import (
    METRIC_NAMES,
    PRUNERS,
    SAMPLERS,
    SWARM_SINGLE_OBJECTIVE,
    check_sampler_installed,
    quiet_optuna,
)
from cnnsearch.search.warm_start import enqueue_warm_start_for, read_warm_start
from cnnsearch.space.parse import (
    SHIPPED_SPACES,
    SearchSpace,
    load_space,
    resolve_space_path,
    space_differences,
)
from cnnsearch.words import count as count_of


@dataclass
class OpenedSearch:
    """A run ready for its workers: what `open_search` made or found."""

    run: RunDir
    info: RunInfo
    space: SearchSpace
    target: int  # total trials the run asks for
    resumed: bool  # False: created by this call
    notes: list[str] = field(default_factory=list)  # what warm start queued, in words
    workers: int = 1  # local worker processes (--workers auto resolved)


def open_search(settings: SearchSettings, *, workers: int | str = 1, download: bool = False) -> OpenedSearch:
    """Create or resume the run `settings` name, ready to search; every check comes first.

    A new run without a name gets `SPACE-DATE`, without a space `default` (a named one too when
    --data is given: a bare --name that matches no run is refused, as it may be a misspelt resume),
    without data `digits`. `settings.fork` starts a new run warm-started from the one named.
    """
    from cnnsearch.search.parallel import parse_workers, resolve_workers

    parse_workers(workers)  # a bad count is refused first; auto is counted after every check (torch)
    runs_dir = check_runs_dir(settings.runs_dir, writing=True)
    if not settings.name:  # a new run: the defaults make the bare command work
        space = settings.space or "default"
        settings = replace(settings, space=space, name=default_run_name(space))
    exists = RunDir(runs_dir, settings.name).exists()
    if settings.fork:
        if not exists:
            raise UserError("--fork NEW_NAME needs --name of an existing run to start from")
        settings = fork_settings(settings)
    elif settings.space is not None and settings.data is None and not exists:
        settings = replace(settings, data="digits")
    elif settings.space is None and settings.data is not None and not exists:  # --data says: a new run
        settings = replace(settings, space="default")
    check_settings(settings)  # before a download, which writes to the cache
    if settings.space is not None and not RunDir(runs_dir, settings.name).exists():
        load_space(resolve_space_path(settings.space)).require_searched(settings.trials or DEFAULT_TRIALS)
    if download and settings.data:
        from cnnsearch.data.load import load_dataset

        load_dataset(settings.data, data_dir=settings.data_dir, download=True)
    resumed = RunDir(runs_dir, settings.name).exists()
    run, info, space_obj = prepare_run(settings)
    target = resolve_target(run, info, settings.trials, timed=settings.timeout_s is not None)
    notes = enqueue_warm_start_for(run, space_obj, settings, info=info, new_run=not resumed)
    if resumed and settings.command:  # last: a resume refused on the way (a damaged journal) changes nothing here
        info.resumes.append(f"{datetime.now(UTC).isoformat(timespec='seconds')} {settings.command}")
        run.write_info(info)
    workers = resolve_workers(workers, settings.device)
    return OpenedSearch(run, info, space_obj, target, resumed, notes, workers)


def check_settings(settings: SearchSettings) -> None:
    """The checks of every option that need no file: a UserError naming the first bad one."""
    check_run_name(settings.name)
    if settings.trials is not None and settings.trials < 1:
        raise UserError(f"--trials must be at least 1, but got {settings.trials}")
    if settings.epochs is not None and settings.epochs < 1:
        raise UserError(f"--epochs must be at least 1, but got {settings.epochs}")
    if settings.keep_weights is not None and settings.keep_weights < 0:
        raise UserError(f"--keep-weights must be 0 or more, but got {settings.keep_weights}")
    if settings.subset is not None and settings.subset < 20:
        raise UserError(f"--subset must be at least 20 images, but got {settings.subset}")
    if settings.sampler is not None and settings.sampler not in SAMPLERS:
        raise UserError(f"--sampler {settings.sampler!r} is not valid; choose one of {', '.join(SAMPLERS)}")
    if settings.pruner is not None and settings.pruner not in PRUNERS:
        raise UserError(f"--pruner {settings.pruner!r} is not valid; choose one of {', '.join(PRUNERS)}")
    if settings.sampler is not None:
        check_sampler_installed(settings.sampler)
    if settings.sampler == "pso" and settings.objective is not None and len(settings.objective) > 1:
        raise UserError(SWARM_SINGLE_OBJECTIVE)


def prepare_run(settings: SearchSettings) -> tuple[RunDir, RunInfo, SearchSpace]:
    """Validate everything, then create the run (or check a resume matches it).

    Nothing is written until every check has passed: a bad option leaves no half run.
    """
    check_settings(settings)
    quiet_optuna()
    read_warm_start(settings)  # bad --enqueue files or --from-run are refused before anything is written
    run = RunDir(settings.runs_dir, settings.name)
    if run.exists():
        return _resume_run(run, settings)
    if settings.space is None:
        raise UserError(
            f"no run named {settings.name!r} in {settings.runs_dir}; to start it, pass --space with "
            f"a shipped space ({', '.join(SHIPPED_SPACES)}) or a .toml file"
        )
    space = load_space(resolve_space_path(settings.space))
    return _create_run(run, settings, space)


def _resume_run(run: RunDir, settings: SearchSettings) -> tuple[RunDir, RunInfo, SearchSpace]:
    info = run.read_info()
    saved_space = load_space(run.space_file)
    differences: list[str] = []
    if settings.space is not None:
        new_space = load_space(resolve_space_path(settings.space))
        differences += space_differences(saved_space.raw, new_space.raw)
    if settings.data is not None and settings.data != info.data:
        differences.append(f"--data: {info.data!r} -> {settings.data!r}")
    if settings.storage is not None and settings.storage != info.storage:
        differences.append(f"--storage: {describe_storage(info.storage)} -> {describe_storage(settings.storage)}")
    if settings.epochs is not None and settings.epochs != info.epochs:
        differences.append(f"--epochs: {info.epochs or 'the space default'} -> {settings.epochs}")
    for setting, field_name in RUN_DEFINING.items():
        given = getattr(settings, setting)
        recorded = getattr(info, field_name)
        if setting == "objective" and given is not None:
            given, recorded = list(given), list(recorded)
        if given is not None and given != recorded:
            option = "--" + field_name.replace("_", "-")
            differences.append(f"{option}: {recorded!r} -> {given!r}")
    if differences:
        shown = "; ".join(differences[:4]) + ("; …" if len(differences) > 4 else "")
        raise UserError(
            f"run {run.name!r} was started with other settings ({shown}); resume it without them, "
            f"or start a new run from its trials with --fork NEW_NAME"
        )
    from cnnsearch.data.load import load_run_dataset, load_run_split  # torch: after the checks above

    dataset = load_run_dataset(info, consequence="its saved split would pick other images")
    # Before anything is written (run.json's resumes, the study's target): a lost split is
    # rebuilt from its seed where that is exact, else the resume is refused.
    load_run_split(
        run,
        info,
        dataset,
        fix=f"restore it to resume run {run.name!r}, or start a new run from its trials with --fork NEW_NAME",
    )
    check_sampler_installed(info.sampler)
    return run, info, saved_space


def _create_run(run: RunDir, settings: SearchSettings, space: SearchSpace) -> tuple[RunDir, RunInfo, SearchSpace]:
    import optuna

    from cnnsearch.data.dataset import dataset_fingerprint
    from cnnsearch.data.load import load_dataset_cached
    from cnnsearch.data.split import make_split, save_split, subsample
    from cnnsearch.train.loop import resolve_device
    from cnnsearch.train.plan import device_label

    if settings.data is None:
        raise UserError("--data is required for a new run (e.g. --data digits)")
    settings = SearchSettings(
        **{
            **settings.__dict__,
            **{key: value for key, value in NEW_RUN_DEFAULTS.items() if getattr(settings, key) is None},
        }
    )
    device = resolve_device(settings.device)
    dataset = load_dataset_cached(settings.data, data_dir=settings.data_dir, image_size=settings.image_size)
    fingerprint = dataset_fingerprint(dataset)
    pool = len(dataset.train_labels)
    if settings.subset and settings.subset > pool:
        raise UserError(
            f"--subset {settings.subset} is more than the {pool} training images of {settings.data}; "
            f"ask for at most {pool}, or drop --subset to search on all of them"
        )
    from cnnsearch.space.inspect import require_trainable

    require_trainable(space, dataset.input_shape, dataset.num_classes, data=settings.data, seed=settings.seed)
    if settings.subset:
        dataset = subsample(dataset, settings.subset, seed=settings.seed)
    split = make_split(dataset.train_labels, val_fraction=settings.val_fraction, seed=settings.seed)
    storage_url = settings.storage or "journal"
    storage = rdb_storage(storage_url) if settings.storage else None  # reachability checked before writing
    _refuse_taking_over(run, storage, storage_url)
    info = RunInfo(
        name=run.name,
        data=settings.data,
        data_dir=settings.data_dir,
        image_size=settings.image_size,
        subset=settings.subset,
        input_shape=list(dataset.input_shape),
        class_names=list(dataset.class_names),
        data_fingerprint=fingerprint,
        split_seed=settings.seed,
        val_fraction=settings.val_fraction,
        split_sizes={
            "train": len(split.train_indices),
            "val": len(split.val_indices),
            "test": len(dataset.test_labels),
        },
        seed=settings.seed,
        storage=storage_url,
        sampler=settings.sampler,
        pruner=settings.pruner,
        objective=list(settings.objective),
        epochs=settings.epochs,
        trial_timeout=settings.trial_timeout_s,
        keep_weights=settings.keep_weights,
        command=settings.command,
        versions=versions(),
        device=device_label(device),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    run.path.mkdir(parents=True, exist_ok=True)
    write_atomic(run.space_file, resolve_space_path(settings.space).read_bytes())
    save_split(split, run.split_file)
    if storage is None:
        storage = run.open_storage(info)
    directions = ["maximize"] + ["minimize"] * (len(settings.objective) - 1)
    study = optuna.create_study(study_name=run.name, storage=storage, directions=directions, load_if_exists=True)
    # optuna-dashboard and Optuna's plots show these names instead of "Objective 0".
    study.set_metric_names([METRIC_NAMES[name] for name in settings.objective])
    run.write_info(info)  # last: a run exists once run.json does
    publish_run(run, info)
    return run, info, space


def _refuse_taking_over(run: RunDir, storage: object, storage_url: str) -> None:
    """A new run never adopts a study that already has trials: its settings and split are not
    this command's (a lost run.json that the study could not restore, another tool's study)."""
    import optuna

    if storage is None:
        if not run.journal_file.is_file():
            return
        storage = run.open_storage(RunInfo(name=run.name, data=""))
        where = str(run.journal_file)
    else:
        where = describe_storage(storage_url)
    try:
        study = optuna.load_study(study_name=run.name, storage=storage)
    except KeyError:
        return
    count = len(study.get_trials(deepcopy=False))
    if count == 0:
        return  # made by a start that stopped before its first trial: nothing to lose
    if study.user_attrs.get("run_info") is None:
        raise UserError(
            f"{where} already holds a study {run.name!r} with {count_of(count, 'trial')} that cnnsearch did not start; "
            f"choose another --name"
        )
    raise UserError(
        f"{where} already holds the search {run.name!r} with {count_of(count, 'trial')}; choose another --name, "
        f"or add workers to it with `cnnsearch worker --name {run.name} --storage URL`"
    )


def fork_settings(settings: SearchSettings) -> SearchSettings:
    """A new run named by --fork, with the source run's settings where none were given."""
    source = RunDir(settings.runs_dir, settings.name)
    if not source.exists():
        raise UserError(
            f"--fork needs an existing run to start from, but there is no run {settings.name!r} in {settings.runs_dir}"
        )
    if RunDir(settings.runs_dir, settings.fork).exists():
        raise UserError(f"run {settings.fork!r} already exists; choose another --fork name")
    info = source.read_info()
    inherited = {
        "data": info.data,
        "data_dir": info.data_dir,
        "image_size": info.image_size,
        "subset": info.subset,
        "epochs": info.epochs,
        "trial_timeout_s": info.trial_timeout,
        "seed": info.seed,
        "sampler": info.sampler,
        "pruner": info.pruner,
        "objective": tuple(info.objective),
        "keep_weights": info.keep_weights,
        "space": str(source.space_file),
    }
    merged = dict(settings.__dict__.items())
    for key, value in inherited.items():
        if merged.get(key) is None:
            merged[key] = value
    merged.update(name=settings.fork, fork=None, from_run=settings.name)
    if merged.get("trials") is None:  # the source's count, but "as many as fit" only with a --timeout
        target = source.load_study(info).user_attrs.get("target_trials")
        merged["trials"] = None if target == UNLIMITED_TRIALS else target
    return SearchSettings(**merged)


def resolve_target(run: RunDir, info: RunInfo, trials: int | None, *, timed: bool = False, owner: bool = True) -> int:
    """The requested total: --trials, else the run's last target, else the default (20; with a
    --timeout, as many as the time allows: UNLIMITED_TRIALS).

    Kept in the study so that every worker (and a resume) agrees on it; only the search (`owner`)
    writes it: a joining worker that rewrote it stopped `search --workers N --timeout T` at 20.
    """
    study = run.load_study(info)
    stored = study.user_attrs.get("target_trials")
    if stored == UNLIMITED_TRIALS and not timed:  # a timed run resumed without a deadline: not forever
        stored = max(DEFAULT_TRIALS, len(counted_trials(study)))
    target = trials or stored or (UNLIMITED_TRIALS if timed else DEFAULT_TRIALS)
    if owner and study.user_attrs.get("target_trials") != target:
        study.set_user_attr("target_trials", int(target))
    return int(target)


def publish_run(run: RunDir, info: RunInfo) -> None:
    """Put run.json and the space into the study, so a worker on another machine can join."""
    study = run.load_study(info)
    if study.user_attrs.get("run_info") is None:
        study.set_user_attr("run_info", json.loads(info.to_json()))
        study.set_user_attr("space_toml", run.space_file.read_text())


def join_run(runs_dir: str | Path, name: str, storage: str | None) -> tuple[RunDir, RunInfo, SearchSpace]:
    """The run to work on: the local folder, or one rebuilt from a shared database's study."""
    import optuna

    from cnnsearch.data.split import make_split, save_split

    run = RunDir(check_runs_dir(runs_dir, writing=True), name)
    if run.exists():
        info = run.read_info()
        if storage is not None and storage != info.storage:
            raise UserError(
                f"run {name!r} here uses storage {describe_storage(info.storage)}, not {describe_storage(storage)}"
            )
        return run, info, load_space(run.space_file)
    if storage is None:
        from cnnsearch.run.folder import unknown_run_message

        raise UserError(
            unknown_run_message(Path(runs_dir), name) + "; to join a search on another machine pass --storage URL"
        )
    quiet_optuna()
    try:
        study = optuna.load_study(study_name=name, storage=rdb_storage(storage))
    except KeyError:
        raise UserError(
            f"the storage {describe_storage(storage)} has no search named {name!r}; start it with `cnnsearch search --name {name} --storage URL`"
        ) from None
    raw = study.user_attrs.get("run_info")
    if raw is None:
        raise UserError(
            f"search {name!r} in {describe_storage(storage)} was not made by cnnsearch search; start it with `cnnsearch search`"
        )
    info = RunInfo.from_dict(raw)
    info.storage = storage  # this machine's URL (host names may differ between machines)
    from cnnsearch.data.load import load_run_dataset

    dataset = load_run_dataset(info, consequence="its saved split would pick other images")
    split = make_split(dataset.train_labels, val_fraction=info.val_fraction, seed=info.split_seed)
    if len(split.val_indices) != info.split_sizes.get("val"):
        raise UserError(
            f"the data for {info.data!r} on this machine differs from the search's ({info.split_sizes}); use the same dataset files"
        )
    run.path.mkdir(parents=True, exist_ok=True)
    write_atomic(run.space_file, study.user_attrs["space_toml"])
    save_split(split, run.split_file)
    run.write_info(info)
    return run, info, load_space(run.space_file)
