"""The import rules of STYLE.md ("Data flows one way"), checked two ways.

At run time: a light module is imported in a fresh interpreter and `sys.modules` must not hold
torch or Lightning (one interpreter per package; its modules are found with pkgutil, so a new
module is checked without editing this file). Statically: `ast` reads every import of every
file under cnnsearch/, at any depth (inside functions too), so a lazy import that would break
the flow only on some code path is caught as well.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cnnsearch"
SOURCES = sorted(PACKAGE.rglob("*.py"))
TORCH = ("torch", "pytorch_lightning", "lightning")


def fresh_python(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run CODE in a new interpreter from the repository root (nothing imported yet)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


# ---- at run time: importing the light packages loads no torch ------------------------------
IMPORT_ALL = """
    import importlib, json, pkgutil, sys
    package = importlib.import_module(sys.argv[1])
    names = [sys.argv[1]]  # the package itself, then every module below it
    names += [info.name for info in pkgutil.walk_packages(getattr(package, "__path__", []), sys.argv[1] + ".")]
    for name in names:
        importlib.import_module(name)
    loaded = sorted({module.split(".")[0] for module in sys.modules} & set(sys.argv[2:]))
    print(json.dumps({"modules": names, "loaded": loaded}))
"""


@pytest.mark.parametrize(
    "package",
    [
        "cnnsearch.spec",
        "cnnsearch.outcomes",
        "cnnsearch.errors",
        "cnnsearch.words",
        "cnnsearch.space",
        "cnnsearch.results",
        "cnnsearch.run",
        "cnnsearch.export.options",
    ],
)
def test_light_packages_import_neither_torch_nor_lightning(package: str) -> None:
    done = fresh_python(IMPORT_ALL, package, *TORCH)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    folder = PACKAGE / package.removeprefix("cnnsearch.")
    if folder.is_dir():  # pkgutil found every module in the folder (else the check proves nothing)
        expected = {f"{package}.{path.stem}" for path in folder.glob("*.py") if path.stem != "__init__"}
        assert expected <= set(found["modules"]), f"pkgutil missed {sorted(expected - set(found['modules']))}"
    assert found["loaded"] == [], f"importing {found['modules']} loads {found['loaded']}"


def test_loading_digits_and_drawing_a_split_imports_neither_scikit_learn_nor_pandas() -> None:
    """Every worker loads its data: scikit-learn and the pandas it imports were a second of its start."""
    code = """
        import json, sys
        from cnnsearch.data.load import load_dataset
        from cnnsearch.data.split import make_split
        make_split(load_dataset("digits").train_labels, seed=0)
        print(json.dumps(sorted({module.split(".")[0] for module in sys.modules} & {"sklearn", "pandas"})))
    """
    done = fresh_python(code)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_help_loads_neither_torch_nor_optuna_nor_pandas() -> None:
    code = """
        import json, runpy, sys
        sys.argv = ["cnnsearch", "--help"]
        try:
            runpy.run_module("cnnsearch", run_name="__main__")
        except SystemExit as stop:
            code = stop.code
        loaded = sorted({module.split(".")[0] for module in sys.modules} & {"torch", "optuna", "pandas"})
        print(json.dumps({"code": code, "loaded": loaded}))
    """
    done = fresh_python(code)
    assert done.returncode == 0, done.stderr
    *help_text, last = done.stdout.splitlines()
    found = json.loads(last)
    assert found["code"] in (0, None), done.stdout
    assert "Usage:" in "\n".join(help_text) and "leaderboard" in "\n".join(help_text)
    assert found["loaded"] == [], f"`cnnsearch --help` loads {found['loaded']}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "--space", "no-such-space.toml", "--data", "digits"], "space file not found: no-such-space.toml"),
        (["export", "no-such-run", "--out", "m", "--final-epochs", "0"], "--final-epochs must be at least 1"),
        (["export", "no-such-run", "--out", "m", "--final-budget", "1m", "--no-retrain"], "has no effect with"),
        (["export", "no-such-run", "--out", "m", "--format", "gif"], "unknown format 'gif'"),
        (["export", "no-such-run", "--out", "m"], "no run named 'no-such-run'"),
        (["search", "--name", "no-such-run"], "no run named 'no-such-run'"),
        (["rerun", "no-such-run", "0"], "no run named 'no-such-run'"),
        (["finetune", "no-such-model", "--data", "digits", "--out", "m"], "model folder no-such-model does not exist"),
    ],
)
def test_bad_input_is_refused_before_torch_is_loaded(tmp_path: Path, argv: list[str], message: str) -> None:
    """Bad input is answered in a fraction of a second: torch (seconds to import) waits for the checks."""
    runs_dir = [] if argv[0] == "finetune" else ["--runs-dir", str(tmp_path / "runs")]  # finetune has none
    code = f"""
        import json, os, runpy, sys
        os.chdir({str(tmp_path)!r})
        sys.argv = ["cnnsearch", *{argv + runs_dir!r}]
        try:
            runpy.run_module("cnnsearch", run_name="__main__")
        except SystemExit as stop:
            code = stop.code
        loaded = sorted({{module.split(".")[0] for module in sys.modules}} & {{"torch", "pytorch_lightning"}})
        print(json.dumps({{"code": code, "loaded": loaded}}))
    """
    done = fresh_python(code)
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["code"] == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert found["loaded"] == [], f"refusing `cnnsearch {' '.join(argv)}` loads {found['loaded']}"
    assert not list(tmp_path.iterdir())


# ---- statically: who imports whom ----------------------------------------------------------
def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, dotted name) for every import in PATH, at any depth, relative ones resolved.

    `from a.b import c` gives `a.b.c`: c may be a module or a name in a.b; either way the name
    starts with the module it comes from, which is what the rules below compare.
    """
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # `from ..x import y` inside cnnsearch/a/b.py -> cnnsearch.x.y
                base = ".".join([*package[: len(package) - node.level + 1], *filter(None, [base])])
            names += [(node.lineno, base if alias.name == "*" else f"{base}.{alias.name}") for alias in node.names]
    return names


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_imported_names_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    # The rules below are only as good as this reader: check it on a file made to be tricky.
    folder = tmp_path / "cnnsearch" / "space"
    folder.mkdir(parents=True)
    path = folder / "demo.py"
    path.write_text(
        "import os\nfrom cnnsearch import errors\n\ndef f():\n    from cnnsearch.train.loop import check\n"
        "class C:\n    def g(self):\n        from ..results import html\n        from . import parse\n"
    )
    assert sorted(imported_names(path, tmp_path)) == [
        (1, "os"),
        (2, "cnnsearch.errors"),
        (5, "cnnsearch.train.loop.check"),
        (8, "cnnsearch.results.html"),
        (9, "cnnsearch.space.parse"),
    ]


@dataclass(frozen=True)
class Rule:
    """Modules in `files` (less those in `exempt`) may import from cnnsearch only `allowed`
    (when given) and never anything in `forbidden` (cnnsearch rooms or outside packages)."""

    name: str
    files: tuple[str, ...]
    exempt: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()
    allowed: tuple[str, ...] | None = None
    # (module, import prefix) pairs that are allowed despite `forbidden`
    exceptions: tuple[tuple[str, str], ...] = ()

    def applies_to(self, module: str) -> bool:
        return any(within(module, prefix) for prefix in self.files) and not any(
            within(module, prefix) for prefix in self.exempt
        )

    def breaks(self, module: str, name: str) -> bool:
        if any(module == where and within(name, what) for where, what in self.exceptions):
            return False
        if any(within(name, prefix) for prefix in self.forbidden):
            return True
        if self.allowed is None or not within(name, "cnnsearch"):
            return False
        return not any(within(name, prefix) for prefix in self.allowed)


def rooms(*names: str) -> tuple[str, ...]:
    return tuple(f"cnnsearch.{name}" for name in names)


RULES = [
    # _lazy (the packages' lazy re-exports) imports nothing from cnnsearch: allowed everywhere below.
    Rule("errors, words and _lazy import nothing from cnnsearch", rooms("errors", "words", "_lazy"), allowed=()),
    Rule("outcomes imports only errors", rooms("outcomes"), allowed=rooms("errors")),
    Rule("spec imports only errors", rooms("spec"), allowed=rooms("errors")),
    Rule("run imports only errors, outcomes, run", rooms("run"), allowed=rooms("errors", "outcomes", "run", "_lazy")),
    # space/inspect.py's `sample_candidates` (behind `cnnsearch space sample`) imports
    # cnnsearch.train.loop.check_candidate inside the function, to report the same feasibility
    # verdict a trial would reach. That is the one exception: no other space module may import
    # train, and inspect.py may import nothing else on this list.
    Rule(
        "space is below search, results, export, cli, train, data, model",
        rooms("space"),
        forbidden=rooms("search", "results", "export", "cli", "train", "data", "model"),
        exceptions=(("cnnsearch.space.inspect", "cnnsearch.train"),),
    ),
    Rule(
        "results never imports train, model, data, export, search, cli, torch",
        rooms("results"),
        forbidden=(*rooms("train", "model", "data", "export", "search", "cli"), *TORCH),
    ),
    Rule(
        "train never imports search, results, export, cli, space",
        rooms("train"),
        forbidden=rooms("search", "results", "export", "cli", "space"),
    ),
    Rule(
        "model and data never import train, search, results, export, cli, space",
        rooms("model", "data"),
        forbidden=rooms("train", "search", "results", "export", "cli", "space"),
    ),
    # Everything else is below the CLI: only cli/ and `python -m cnnsearch` may import it.
    Rule(
        "nothing below the CLI imports cnnsearch.cli",
        ("cnnsearch",),
        exempt=rooms("cli", "__main__"),
        forbidden=rooms("cli"),
    ),
]


def broken(rule: Rule) -> list[str]:
    problems = []
    for path in SOURCES:
        module = module_name(path)
        if not rule.applies_to(module):
            continue
        problems += [
            f"{path.relative_to(ROOT)}:{line} imports {name}"
            for line, name in imported_names(path)
            if rule.breaks(module, name)
        ]
    return problems


@pytest.mark.parametrize("rule", RULES, ids=[rule.name for rule in RULES])
def test_imports_flow_one_way(rule: Rule) -> None:
    checked = [path for path in SOURCES if rule.applies_to(module_name(path))]
    assert checked, f"no file matches {rule.files}: the rule checks nothing"
    assert broken(rule) == []


def test_space_inspect_is_the_only_space_module_that_imports_train() -> None:
    # The exception above is real (not a stale allowance): inspect.py does import train.
    users = sorted(
        module_name(path)
        for path in SOURCES
        if within(module_name(path), "cnnsearch.space")
        and any(within(name, "cnnsearch.train") for _, name in imported_names(path))
    )
    assert users == ["cnnsearch.space.inspect"]


def test_rules_reject_what_they_forbid_and_nothing_more() -> None:
    rule = {rule.files: rule for rule in RULES}
    space, run, cli = rule[rooms("space")], rule[rooms("run")], rule[("cnnsearch",)]
    assert space.breaks("cnnsearch.space.parse", "cnnsearch.train.loop.check_candidate")
    assert not space.breaks("cnnsearch.space.inspect", "cnnsearch.train.loop.check_candidate")
    assert space.breaks("cnnsearch.space.inspect", "cnnsearch.model.build")  # the exception is train only
    assert run.breaks("cnnsearch.run.folder", "cnnsearch.spec.Architecture")
    assert not run.breaks("cnnsearch.run.folder", "optuna.storages")  # outside packages are not cnnsearch
    assert cli.applies_to("cnnsearch.predict") and cli.breaks("cnnsearch.predict", "cnnsearch.cli.app.out")
    assert not cli.applies_to("cnnsearch.__main__") and not cli.applies_to("cnnsearch.cli.models")
    assert not cli.breaks("cnnsearch.predict", "cnnsearch.client")  # a prefix of a name is not the module
