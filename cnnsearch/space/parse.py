"""Owns search-space files: the rules of every key (declared as data), reading and validating a
TOML file with every problem reported at once, and the `SearchSpace` it becomes.

A space is a TOML file. Every searched key uses one grammar: `x = 3` is fixed,
`x = [3, 5]` is a choice, `x = { low = 16, high = 128, log = true }` or
`x = { low = 0.0, high = 0.5, step = 0.1 }` is a range. The name a user writes is the name
Optuna stores (`stage2.kernel_size`, `train.lr`).

Knows the spec. Must not import torch, and needs no Optuna import.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field, replace
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnsearch.errors import SpaceError, UserError
from cnnsearch.space.rules import (
    CONSTRAINT_KEYS,
    SEQUENCE_TABLES,
    SEQUENCE_TOP_LEVEL,
    TABLES,
    TOP_LEVEL,
    KeyRule,
)
from cnnsearch.space.starters import STARTER_TABLE, parse_starters
from cnnsearch.spec import (
    Architecture,
)

if TYPE_CHECKING:
    from cnnsearch.space.sample import SuggestingTrial


@dataclass(frozen=True)
class Dimension:
    """One key as declared: fixed, a choice, or an int/float range."""

    table: str
    key: str
    kind: str  # "fixed", "choice", "int", "float"
    value: Any = None  # fixed
    choices: tuple[Any, ...] = ()  # choice
    low: float = 0
    high: float = 0
    log: bool = False
    step: float | None = None

    def sample(self, trial: SuggestingTrial, name: str) -> Any:
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            if len(self.choices) == 1:
                return self.choices[0]
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        value = trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)
        # A step grid gives 0.30000000000000004; the hand-written 0.3 must hash the same.
        return round(value, 12) if self.step else value

    def describe(self) -> str:
        if self.kind == "fixed":
            return repr(self.value)
        if self.kind == "choice":
            return "one of " + ", ".join(repr(choice) for choice in self.choices)
        text = f"{self.low:g} .. {self.high:g}"
        if self.log:
            text += " (log)"
        if self.step:
            text += f" step {self.step:g}"
        return text

    @property
    def searched(self) -> bool:
        return self.kind != "fixed" and not (self.kind == "choice" and len(self.choices) == 1)


@dataclass(frozen=True)
class SearchSpace:
    """A validated space: what may vary and the constraints candidates must meet."""

    path: str
    dimensions: dict[str, dict[str, Dimension]]  # table -> key -> dimension
    max_params: int | None = None
    max_flops: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)
    form: str = "stages"  # "stages" ([network] and [stage]) or "sequence" ([sequence] and a table per kind)
    starters: tuple[dict[str, Any], ...] = ()  # [[starter]]: parameter dicts trained first (space.starters)

    @property
    def rules(self) -> dict[str, dict[str, KeyRule]]:
        return SEQUENCE_TABLES if self.form == "sequence" else TABLES

    def dimension(self, table: str, key: str) -> Dimension:
        found = self.dimensions[table].get(key)
        if found is None and table == "stage" and key in self.dimensions["network"]:
            return self.dimensions["network"][key]
        if found is None:
            rule = self.rules[table][key]
            return Dimension(table, key, "fixed", value=rule.default)
        return found

    def kinds(self) -> tuple[str, ...]:
        """The layer kinds a position of the sequence form may be, in the order declared."""
        dim = self.dimension("sequence", "kinds")
        return dim.choices if dim.kind == "choice" else (dim.value,)

    def form_line(self) -> str:
        """Which form the space uses, drawn on one line (`space show` prints it above the table)."""
        if self.form == "sequence":
            count = self.dimension("sequence", "layers").describe()
            return f"form: sequence   input -> layer1 -> ... -> layerN -> head   (N: {count}; each layer: {' | '.join(self.kinds())})"
        count = self.dimension("network", "stages").describe()
        return f"form: stages   input -> stage1 -> ... -> stageN -> head   (N: {count}; each stage: 1+ convs, then maybe a pool)"

    @property
    def searched(self) -> int:
        """How many keys vary (a choice or a range); 0: every candidate is the same network."""
        return sum(dim.searched for table in self.dimensions.values() for dim in table.values())

    def require_searched(self, trials: int) -> None:
        """Refuse a space that searches nothing when more than one trial is asked: the search would
        train one network, then only duplicates. One trial of it trains that network."""
        if not self.searched and trials > 1:
            raise UserError(
                f"{self.path}: the space searches nothing (0 searched keys: every key is fixed); make at least one "
                f"key a choice or a range, e.g. network.filters = [16, 32], or pass --trials 1 to train its one network"
            )

    def sample(self, trial: SuggestingTrial, *, epochs: int | None = None) -> Architecture:
        """Draw one candidate, asking only for the parameters that exist in it (`space.sample`)."""
        from cnnsearch.space.sample import sample_architecture

        return sample_architecture(self, trial, epochs=epochs)

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(name as stored, kind, values, meaning) for every declared key, for `space show`."""
        if self.form == "sequence":
            from cnnsearch.space.sequence import sequence_rows

            table_rows = sequence_rows(self)
        else:
            table_rows = []
            for table, dims in self.dimensions.items():
                for key, dim in dims.items():
                    name = f"stage<i>.{key}" if table == "stage" else f"{table}.{key}"
                    kind = dim.kind if dim.searched else "fixed"
                    table_rows.append((name, kind, dim.describe(), TABLES[table][key].meaning))
        for key, value in (("max_params", self.max_params), ("max_flops", self.max_flops)):
            if value is not None:
                table_rows.append((f"constraints.{key}", "limit", f"{value:,.0f}", CONSTRAINT_KEYS[key]))
        return table_rows


# The spaces that ship inside the package (cnnsearch/search_spaces/NAME.toml), in the order
# they are named to the user; tests/test_package.py holds this list against the folder.
SHIPPED_SPACES = ("default", "tiny", "cifar", "sequence")


def shipped_space(name: str) -> Traversable | None:
    """The packaged file of a shipped space (`default` or `default.toml`), or None when there is none.

    Read through importlib.resources, so it is found wherever cnnsearch is installed (a wheel in
    site-packages, an editable checkout), not only next to the repository.
    """
    stem = name.removesuffix(".toml")
    if stem not in SHIPPED_SPACES:
        return None
    found = files("cnnsearch") / "search_spaces" / f"{stem}.toml"
    return found if found.is_file() else None


def resolve_space_path(text: str | Path) -> Path | Traversable:
    """A space file path, or the packaged file of a shipped space (`default`, `tiny`, `cifar`, `sequence`)."""
    path = Path(text)
    if path.is_file() or len(path.parts) > 1:
        return path
    return shipped_space(path.name) or path


# Words other formats read as booleans; TOML knows only lowercase true and false.
_BOOLEAN_WORDS = {"on": "true", "yes": "true", "off": "false", "no": "false", "True": "true", "False": "false"}


def _toml_hint(path: Path | Traversable, error: tomllib.TOMLDecodeError) -> str:
    """The likely fix of an invalid value that is a boolean in another format (`on` -> `true`)."""
    import re

    found = re.search(r"line (\d+), column (\d+)", str(error))
    if not str(error).startswith("Invalid value") or found is None:
        return ""
    try:
        line = path.read_text(encoding="utf-8").splitlines()[int(found.group(1)) - 1]
    except (OSError, UnicodeDecodeError, IndexError):
        return ""
    word = re.match(r"[A-Za-z]+", line[int(found.group(2)) - 1 :])
    if word is None or word.group(0) not in _BOOLEAN_WORDS:
        return ""
    return f"; TOML booleans are true and false: write {_BOOLEAN_WORDS[word.group(0)]} instead of {word.group(0)}"


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a space file (or a shipped space by name); every problem is reported at once."""
    resolved = resolve_space_path(path)
    hint = f"pass an existing .toml file or a shipped space: {', '.join(SHIPPED_SPACES)}"
    if resolved.is_dir():
        raise UserError(f"space file {resolved} is a directory; {hint}")
    if not resolved.is_file():
        raise UserError(f"space file not found: {resolved}; {hint}")
    try:
        raw = tomllib.loads(resolved.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise SpaceError(f"{resolved}: invalid TOML: {error}{_toml_hint(resolved, error)}") from None
    except UnicodeDecodeError:
        raise SpaceError(f"{resolved}: not a text file; a space is a UTF-8 TOML file") from None
    return parse_space(raw, source=str(resolved))


def parse_space(raw: dict[str, Any], *, source: str = "<space>") -> SearchSpace:
    problems: list[str] = []
    from cnnsearch.space.sequence import misplaced_table, unchosen_kind_problems

    form = "sequence" if "sequence" in raw else "stages"  # a [sequence] table makes a file the sequence form
    all_rules, top_level = (SEQUENCE_TABLES, SEQUENCE_TOP_LEVEL) if form == "sequence" else (TABLES, TOP_LEVEL)
    dimensions: dict[str, dict[str, Dimension]] = {table: {} for table in all_rules}

    for table, content in raw.items():
        if table == STARTER_TABLE:  # checked below, against the finished space
            continue
        if table not in top_level:
            problems.append(misplaced_table(table, form, top_level))
            continue
        if not isinstance(content, dict):
            problems.append(f"{table}: must be a table ([{table}]), but got {type(content).__name__}")
            continue
        if table == "constraints":
            continue
        for key, value in content.items():
            rules = all_rules[table]
            if key not in rules:
                problems.append(f"[{table}] {key}: unknown key{_suggest(key, rules)}")
                continue
            dimension, key_problems = _parse_value(table, key, value, rules[key])
            problems.extend(f"[{table}] {key}: {problem}" for problem in key_problems)
            if dimension is not None:
                dimensions[table][key] = dimension

    if form == "sequence":
        problems.extend(unchosen_kind_problems(raw))
    else:
        for key in sorted(set(dimensions["network"]) & set(dimensions["stage"])):  # sorted: same message every run
            problems.append(
                f"[stage] {key}: also set in [network]; keep it in [network] for one value per network "
                f"or in [stage] for one value per stage"
            )
        if "filters" in dimensions["stage"] and "width_multiplier" in dimensions["network"]:
            problems.append("[network] width_multiplier: only applies when filters is set in [network]")

    limits: dict[str, float] = {}
    for key, value in (raw.get("constraints") or {}).items() if isinstance(raw.get("constraints"), dict) else []:
        if key not in CONSTRAINT_KEYS:
            problems.append(f"[constraints] {key}: unknown key{_suggest(key, CONSTRAINT_KEYS)}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            problems.append(f"[constraints] {key}: must be a positive number, but got {value!r}")
        else:
            limits[key] = value

    max_params = limits.get("max_params")
    space = SearchSpace(
        path=source,
        dimensions=dimensions,
        max_params=int(max_params) if max_params is not None else None,
        max_flops=limits.get("max_flops"),
        raw=raw,
        form=form,
    )
    if not problems:  # a starter is replayed through the space, so the space must be sound first
        starters, starter_problems = parse_starters(raw.get(STARTER_TABLE), space)
        problems.extend(starter_problems)
        space = replace(space, starters=starters)
    if problems:
        raise SpaceError("\n".join(f"{source}: {problem}" for problem in problems))
    return space


def _suggest(word: str, valid: Any) -> str:
    close = difflib.get_close_matches(word, list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _type_name(value_type: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[value_type]


def _check_scalar(value: Any, rule: KeyRule) -> tuple[Any, str | None]:
    """Coerce one value to the rule's type (ints are fine for floats) and check it."""
    if rule.value_type is bool:
        if not isinstance(value, bool):
            return value, f"must be true or false, but got {value!r}"
        return value, None
    if rule.value_type is int and (isinstance(value, bool) or not isinstance(value, int)):
        return value, f"must be an integer, but got {value!r}"
    if rule.value_type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"must be a number, but got {value!r}"
        value = float(value)
    if rule.value_type is str:
        if not isinstance(value, str):
            return value, f"must be a string, but got {value!r}"
        if rule.allowed and value not in rule.allowed:
            return value, f"{value!r} is not one of {', '.join(map(repr, rule.allowed))}{_suggest(value, rule.allowed)}"
        return value, None
    return value, rule.check(value)


def _parse_value(table: str, key: str, value: Any, rule: KeyRule) -> tuple[Dimension | None, list[str]]:
    if isinstance(value, list):
        if not value:
            return None, ["an empty choice list; give at least one value"]
        checked = [_check_scalar(item, rule) for item in value]
        problems = [problem for _, problem in checked if problem]
        if problems:
            return None, problems
        choices = tuple(item for item, _ in checked)
        if len(set(choices)) != len(choices):
            return None, [f"choices repeat a value: {list(value)}"]
        return Dimension(table, key, "choice", choices=choices), []

    if isinstance(value, dict):
        unknown = [name for name in value if name not in ("low", "high", "log", "step")]
        if unknown:
            return None, [f"a range takes low, high, log and step, but got {', '.join(unknown)}"]
        if rule.value_type not in (int, float):
            return None, [f"is {_type_name(rule.value_type)}: give one value or a list of choices, not a range"]
        if "low" not in value or "high" not in value:
            return None, ["a range needs both low and high, e.g. { low = 16, high = 128 }"]
        low, high = value["low"], value["high"]
        log, step = value.get("log", False), value.get("step")
        if log is True and isinstance(low, (int, float)) and not isinstance(low, bool) and low <= 0:
            return None, [f"low > 0 must hold for log = true, but got low={low}"]
        problems = []
        for name, bound in (("low", low), ("high", high)):
            _, problem = _check_scalar(bound, rule)
            if problem:
                problems.append(f"{name}: {problem}")
        if not isinstance(log, bool):
            problems.append(f"log must be true or false, but got {log!r}")
        if problems:
            return None, problems
        if low > high:
            return None, [f"low <= high must hold, but got low={low}, high={high}"]
        if log and low <= 0:
            return None, [f"low > 0 must hold for log = true, but got low={low}"]
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
                return None, [f"step > 0 must hold, but got step={step!r}"]
            if log:
                return None, ["log = true and step cannot be combined; drop one"]
            if rule.value_type is int and not isinstance(step, int):
                return None, [f"step must be an integer for an integer key, but got step={step}"]
        if key == "kernel_size" and (low % 2 == 0 or high % 2 == 0 or (step or 1) % 2 == 1 and low != high):
            return None, [
                f"a kernel range must hold odd sizes only: use low and high odd and step = 2, e.g. {{ low = {low | 1}, high = {high | 1}, step = 2 }}"
            ]
        kind = "int" if rule.value_type is int else "float"
        return Dimension(table, key, kind, low=low, high=high, log=log, step=step), []

    checked, problem = _check_scalar(value, rule)
    if problem:
        return None, [problem]
    return Dimension(table, key, "fixed", value=checked), []


def space_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose declared values differ between two parsed space files, e.g. `[train] lr`."""
    differences = []
    for table in sorted((set(old) | set(new)) - {STARTER_TABLE}):  # starters are queued once, at creation
        old_table, new_table = old.get(table, {}), new.get(table, {})
        if not isinstance(old_table, dict) or not isinstance(new_table, dict):
            if old_table != new_table:
                differences.append(f"[{table}]")
            continue
        for key in sorted(set(old_table) | set(new_table)):
            if old_table.get(key) != new_table.get(key):
                differences.append(f"[{table}] {key}: {old_table.get(key)!r} -> {new_table.get(key)!r}")
    return differences
