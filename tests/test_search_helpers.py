"""Small real runs shared by tests of several rooms (tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path

from cnnsearch.run.folder import RunDir
from cnnsearch.search.settings import SearchSettings
from cnnsearch.search.setup import prepare_run
from cnnsearch.search.worker import WorkerLoop

INFEASIBLE_SPACE = """
[network]
stages = [1, 3]
padding = "valid"
filters = 8
[stage]
kernel_size = 5
[train]
epochs = 1
batch_size = 64
"""


def infeasible_run(tmp_path: Path) -> RunDir:
    """A real one-trial digits run whose candidate cannot fit 8x8 images (three stages are queued;
    one would fit: a space no candidate fits is refused before it starts)."""
    space = tmp_path / "bad.toml"
    space.write_text(INFEASIBLE_SPACE)
    settings = SearchSettings(name="bad", space=str(space), data="digits", runs_dir=str(tmp_path / "runs"), trials=1)
    run, info, loaded = prepare_run(settings)
    run.load_study().enqueue_trial({"network.stages": 3})
    WorkerLoop(run, info, loaded, target=1, device="cpu").run_loop()
    return run
