"""Owns the layout of a run folder and opening its Optuna study.

`runs/<name>/` answers "what exactly ran?" from its own files:

    run.json            settings, data, split, budgets, command, versions (RunInfo); the study
                        keeps a copy, and a lost run.json is restored from it
    space.toml          the space file as it was when the run started
    split.npz           the train/validation indices (data.split.save_split)
    study.journal       the Optuna study (journal storage: safe for several local processes)
    trials/<n>.json     one finished trial: its architecture and metrics
    weights/trial_<n>.pt  weights of the best trials only
    checkpoints/<key>.pt  the last finished epoch of an unfinished trial (resume)
    heartbeats/<n>      touched by the worker that trains trial n (stale = dead worker)
    search.log          Optuna's own warnings (e.g. a sampler's fallbacks), kept out of the live view

Must not import torch or Lightning: the leaderboard and report read runs through this.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cnnsearch.errors import DiskFull, RunFault, UserError, is_disk_full
from cnnsearch.run.storage import describe_storage, open_storage

RUN_FILE = "run.json"


JOURNAL_FILE = "study.journal"


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class RunInfo:
    """Everything needed to resume and reproduce a run; saved as run.json."""

    name: str
    data: str  # the --data spec
    data_dir: str | None = None
    image_size: int | None = None
    subset: int | None = None  # stratified subset of the training pool, if any
    input_shape: list[int] = field(default_factory=list)  # C, H, W
    class_names: list[str] = field(default_factory=list)
    data_fingerprint: str | None = None  # of the whole dataset: a resume or export on changed data is refused
    split_seed: int = 0
    val_fraction: float = 0.15
    split_sizes: dict[str, int] = field(default_factory=dict)  # train, val, test
    seed: int = 0  # study seed: trial n trains with seed + n
    storage: str = "journal"  # "journal" (the local file) or an RDB URL
    sampler: str = "tpe"
    pruner: str = "hyperband"
    objective: list[str] = field(default_factory=lambda: ["accuracy"])
    epochs: int | None = None  # per-trial epochs budget (overrides the space), None = space's
    trial_timeout: float | None = None  # seconds
    keep_weights: int = 3  # best trials whose weights are kept
    command: str = ""  # the command that started the run
    resumes: list[str] = field(default_factory=list)  # "TIME COMMAND" of each later `cnnsearch search` on it
    versions: dict[str, str] = field(default_factory=dict)
    device: str = ""
    created: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def session_started(self) -> float:
        """Unix time the latest `cnnsearch search` of this run began (its start or last resume); 0 if unknown."""
        latest = self.resumes[-1].split(" ", 1)[0] if self.resumes else self.created
        try:
            return datetime.fromisoformat(latest).timestamp()
        except ValueError:
            return 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunInfo:
        known = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        return cls(**known)


def package_versions(packages: tuple[str, ...], *, python: bool = True) -> dict[str, str]:
    """Installed versions by distribution name (run.json, model.json, benchmark rows)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()} if python else {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def user_file_mode() -> int:
    """The mode a plain `open()` gives a new file under this process's umask (0644 under 022)."""
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def honour_umask(file: int | str | Path) -> None:
    """Give a temp file the mode a normal file would get: mkstemp makes them 0600, which breaks a
    runs folder or a model shared with a team."""
    os.chmod(file, user_file_mode())


def write_atomic(path: Path, data: str | bytes, *, what: str | None = None, fsync: bool = True) -> None:
    """Write a file so that a reader (or a crash) never sees half of it, and a failed write
    leaves no temp file. A full disk is a `DiskFull` naming `what` (default: the path).
    `fsync=False` for files a power cut may lose (weights, checkpoints): only a rename is atomic."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        if is_disk_full(error):
            raise DiskFull(path, what) from None
        raise
    try:
        honour_umask(handle)
        with os.fdopen(handle, "wb") as file:
            file.write(data.encode() if isinstance(data, str) else data)
            file.flush()
            if fsync:
                os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException as error:
        Path(temp).unlink(missing_ok=True)
        if is_disk_full(error):
            raise DiskFull(path, what) from None
        raise


def check_runs_dir(runs_dir: str | Path, *, writing: bool = False) -> Path:
    """The `--runs-dir` folder, refused in one line when it is a file, or (`writing`) when
    nothing can be written there."""
    runs_dir = Path(runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise UserError(
            f"--runs-dir {runs_dir} is a file, not a folder; pass the folder that holds the runs (default runs/)"
        )
    problem = unwritable(runs_dir) if writing else None
    if problem:
        raise UserError(f"--runs-dir {runs_dir} {problem}; pass a writable folder with --runs-dir DIR")
    return runs_dir


def unwritable(path: Path) -> str | None:
    """Why nothing can be written at `path` (or where it would be created), or None."""
    existing = Path(os.path.abspath(path))
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"is inside {existing}, which is a file"
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        return "is on a read-only file system"
    if not os.access(existing, os.W_OK | os.X_OK):
        return "is not writable by you"
    return None


class RunDir:
    """Paths inside one run folder, and its study."""

    def __init__(self, runs_dir: str | Path, name: str) -> None:
        self.runs_dir = Path(runs_dir)
        self.name = name
        self.path = self.runs_dir / name
        self._unrestorable = False  # run.json is lost and the study holds no copy of it

    # ---- paths ----------------------------------------------------------------------
    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def space_file(self) -> Path:
        return self.path / "space.toml"

    @property
    def split_file(self) -> Path:
        return self.path / "split.npz"

    @property
    def journal_file(self) -> Path:
        return self.path / JOURNAL_FILE

    def trial_file(self, number: int) -> Path:
        return self.path / "trials" / f"{number}.json"

    def weights_file(self, number: int) -> Path:
        return self.path / "weights" / f"trial_{number}.pt"

    def checkpoint_file(self, key: str) -> Path:
        return self.path / "checkpoints" / f"{key}.pt"

    def heartbeat_file(self, number: int) -> Path:
        return self.path / "heartbeats" / str(number)

    @property
    def log_file(self) -> Path:
        return self.path / "search.log"

    def exists(self) -> bool:
        """run.json is there, or could be restored from the study (`restore_from_study`)."""
        return self.run_file.is_file() or self.restore_from_study()

    def restore_from_study(self) -> bool:
        """Write a lost run.json (and space.toml) back from the copies the study keeps
        (`search.setup.publish_run`), and say so in a `Notice`; False when there is none.

        Only a local journal can be found without run.json: an RDB's URL was in the lost file.
        """
        if self._unrestorable or self.run_file.is_file() or not self.journal_file.is_file():
            return False
        import warnings

        import optuna

        from cnnsearch.errors import Notice

        self._unrestorable = True  # until it worked: each look costs a journal read
        try:
            study = optuna.load_study(
                study_name=self.name, storage=open_storage("journal", journal_path=self.journal_file)
            )
        except KeyError:
            return False
        raw, space = study.user_attrs.get("run_info"), study.user_attrs.get("space_toml")
        if not isinstance(raw, dict) or raw.get("name") != self.name or raw.get("storage") != "journal":
            return False
        restored = [self.run_file]
        if not self.space_file.is_file() and isinstance(space, str):
            write_atomic(self.space_file, space)
            restored.append(self.space_file)
        self.write_info(RunInfo.from_dict(raw))
        self._unrestorable = False
        warnings.warn(Notice(f"restored {' and '.join(map(str, restored))} from its study"), stacklevel=2)
        return True

    # ---- run.json ---------------------------------------------------------------------
    def read_info(self) -> RunInfo:
        if not self.exists():  # a lost run.json comes back from the study where it can
            raise UserError(unknown_run_message(self.runs_dir, self.name))
        try:
            return RunInfo.from_dict(json.loads(self.run_file.read_text()))
        except (json.JSONDecodeError, TypeError) as error:
            raise UserError(f"{self.run_file} is not a valid run file ({error}); the run folder is damaged") from None

    def write_info(self, info: RunInfo) -> None:
        write_atomic(self.run_file, info.to_json() + "\n")

    def read_trial_record(self, number: int) -> dict[str, Any] | None:
        path = self.trial_file(number)
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    # ---- the study --------------------------------------------------------------------
    def open_storage(self, info: RunInfo | None = None) -> Any:
        """The study's storage: the local journal file, or the RDB named in run.json."""
        info = info or self.read_info()
        return open_storage(info.storage, journal_path=self.journal_file)

    def load_study(self, info: RunInfo | None = None) -> Any:
        import optuna

        info = info or self.read_info()
        if info.storage == "journal" and not self.journal_file.is_file():  # not an empty new one over the loss
            raise RunFault(
                f"{self.journal_file} is missing: run {self.name!r} recorded its trials there (trials/ keeps a copy "
                f"of each finished one); restore it from a backup, or start another run"
            )
        storage = self.open_storage(info)
        try:
            return optuna.load_study(study_name=info.name, storage=storage)
        except KeyError:
            raise UserError(
                f"run {self.name!r} has no study in its storage {describe_storage(info.storage)}; "
                f"start it again with `cnnsearch search --name {self.name}`"
            ) from None


def find_trial(run: RunDir, trials: Any, number: int) -> Any:
    """The trial with this number, or a UserError that says which numbers exist."""
    for trial in trials:
        if trial.number == number:
            return trial
    if not trials:
        raise UserError(f"run {run.name!r} has no trial {number}; it has no trials yet")
    numbers = [trial.number for trial in trials]
    raise UserError(f"run {run.name!r} has no trial {number}; trials are numbered {min(numbers)}..{max(numbers)}")


def unknown_run_message(runs_dir: Path, name: str) -> str:
    known = list_run_names(runs_dir)
    hint = f"; known runs: {', '.join(known[:8])}" if known else f"; {runs_dir} holds no runs yet"
    return f"no run named {name!r} in {runs_dir}{hint} (start one with `cnnsearch search --name {name}`)"


def list_run_names(runs_dir: str | Path) -> list[str]:
    runs_dir = check_runs_dir(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted(path.parent.name for path in runs_dir.glob(f"*/{RUN_FILE}"))


def check_run_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise UserError(f"run name {name!r} is not valid; use letters, digits, '.', '_' and '-' only")
    return name
