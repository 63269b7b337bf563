"""Tests for cnnsearch.space: validation messages (exact), sampling through FixedTrial, conditional
parameters and parameter names through real in-memory studies."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import optuna
import pytest
from optuna.trial import FixedTrial

from cnnsearch.errors import SpaceError, UserError
from cnnsearch.space.parse import TABLES, SearchSpace, load_space, parse_space
from cnnsearch.spec import Architecture, AugmentSettings, ConvLayer, Head, PoolLayer, TrainSettings

SPACE_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
SPACES = sorted(SPACE_DIR.glob("*.toml"))
DEFAULT = SPACE_DIR / "default.toml"


@pytest.fixture(autouse=True, scope="module")
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def space_from(text: str) -> SearchSpace:
    return parse_space(tomllib.loads(text), source="s.toml")


def problems_of(path: Path) -> list[str]:
    """The lines of the SpaceError raised for a file, without the leading `path: `."""
    with pytest.raises(SpaceError) as caught:
        load_space(path)
    lines = str(caught.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    return [line[len(f"{path}: ") :] for line in lines]


def study_trials(space: SearchSpace, n: int, *, seed: int = 0) -> list[tuple[dict, Architecture]]:
    """(params as Optuna stored them, architecture) for N trials of a real in-memory study."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    drawn = []
    for _ in range(n):
        trial = study.ask()
        arch = space.sample(trial)
        study.tell(trial, 0.0)
        drawn.append((trial.params, arch))
    return drawn


def kinds(arch: Architecture) -> str:
    return "-".join("c" if layer.kind == "conv" else "pool" for layer in arch.layers)


# ---- validation ---------------------------------------------------------------------------
@pytest.mark.parametrize("space_file", SPACES, ids=lambda path: path.stem)
def test_every_shipped_space_validates(space_file: Path) -> None:
    space = load_space(space_file)
    assert any(dim.searched for dims in space.dimensions.values() for dim in dims.values())
    assert space.rows()


BROKEN = {
    "even_kernel": ("[stage]\nkernel_size = 4\n", "[stage] kernel_size: 4 is even; use odd sizes"),
    "even_kernel_in_choice": ("[stage]\nkernel_size = [3, 4]\n", "[stage] kernel_size: 4 is even; use odd sizes"),
    "misspelled_key": ("[network]\nfiltres = 32\n", "[network] filtres: unknown key; did you mean 'filters'?"),
    "log_low_zero": (
        "[train]\nweight_decay = { low = 0.0, high = 0.01, log = true }\n",
        "[train] weight_decay: low > 0 must hold for log = true, but got low=0.0",
    ),
    # lr must be > 0 whatever the scale, so its own check answers first.
    "lr_low_zero": (
        "[train]\nlr = { low = 0.0, high = 0.1, log = true }\n",
        "[train] lr: low > 0 must hold for log = true, but got low=0.0",
    ),
    "low_above_high": (
        "[network]\nfilters = { low = 128, high = 16 }\n",
        "[network] filters: low <= high must hold, but got low=128, high=16",
    ),
    "unknown_table": (
        "[netwrk]\nstages = 2\n",
        "[netwrk]: unknown table; did you mean 'network'?; valid tables: network, stage, head, train, augment, constraints",
    ),
    "wrong_type_int": ('[network]\nstages = "two"\n', "[network] stages: must be an integer, but got 'two'"),
    "wrong_type_float_in_int_range": (
        "[network]\nstages = { low = 1.5, high = 3 }\n",
        "[network] stages: low: must be an integer, but got 1.5",
    ),
    "wrong_type_bool": ("[stage]\npool = 1\n", "[stage] pool: must be true or false, but got 1"),
    "wrong_type_number": ('[train]\nlr = "fast"\n', "[train] lr: must be a number, but got 'fast'"),
    "bool_is_not_a_number": ("[train]\nlr = true\n", "[train] lr: must be a number, but got True"),
    "unknown_activation": (
        '[network]\nactivation = ["relu", "relux"]\n',
        "[network] activation: 'relux' is not one of 'relu', 'gelu', 'silu', 'elu'; did you mean 'relu'?",
    ),
    "empty_list": ("[stage]\nconvs = []\n", "[stage] convs: an empty choice list; give at least one value"),
    "repeated_choice": ("[head]\ndropout = [0, 0.0]\n", "[head] dropout: choices repeat a value: [0, 0.0]"),
    "both_network_and_stage": (
        "[network]\nkernel_size = 3\n[stage]\nkernel_size = [3, 5]\n",
        "[stage] kernel_size: also set in [network]; keep it in [network] for one value per network "
        "or in [stage] for one value per stage",
    ),
    "width_multiplier_with_stage_filters": (
        "[network]\nwidth_multiplier = 2.0\n[stage]\nfilters = [8, 16]\n",
        "[network] width_multiplier: only applies when filters is set in [network]",
    ),
    "range_of_strings": (
        "[network]\npadding = { low = 1, high = 2 }\n",
        "[network] padding: is a string: give one value or a list of choices, not a range",
    ),
    "range_with_unknown_field": (
        "[network]\nfilters = { low = 16, hi = 64 }\n",
        "[network] filters: a range takes low, high, log and step, but got hi",
    ),
    "range_without_high": (
        "[network]\nfilters = { low = 16 }\n",
        "[network] filters: a range needs both low and high, e.g. { low = 16, high = 128 }",
    ),
    "log_and_step": (
        "[network]\nfilters = { low = 16, high = 64, log = true, step = 8 }\n",
        "[network] filters: log = true and step cannot be combined; drop one",
    ),
    "kernel_range_with_odd_step": (
        "[stage]\nkernel_size = { low = 3, high = 7 }\n",
        "[stage] kernel_size: a kernel range must hold odd sizes only: use low and high odd and step = 2, "
        "e.g. { low = 3, high = 7, step = 2 }",
    ),
    "dropout_out_of_range": ("[head]\ndropout = [0.0, 1.0]\n", "[head] dropout: 1.0 must be in [0, 1)"),
    "not_a_table": ("network = 3\n", "network: must be a table ([network]), but got int"),
    "unknown_constraint": (
        "[constraints]\nmax_param = 1000\n",
        "[constraints] max_param: unknown key; did you mean 'max_params'?",
    ),
    "non_positive_constraint": (
        "[constraints]\nmax_flops = 0\n",
        "[constraints] max_flops: must be a positive number, but got 0",
    ),
}


@pytest.mark.parametrize("text, expected", BROKEN.values(), ids=BROKEN.keys())
def test_broken_file_is_rejected_with_the_exact_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "space.toml"
    path.write_text(text)
    assert problems_of(path) == [expected]


def test_toml_syntax_error_says_where(tmp_path: Path) -> None:
    path = tmp_path / "space.toml"
    path.write_text("[network]\nstages = = 3\n")
    with pytest.raises(SpaceError) as caught:
        load_space(path)
    assert str(caught.value).startswith(f"{path}: invalid TOML: ")  # the rest is tomllib's own text
    assert "line 2" in str(caught.value)


def test_every_problem_is_reported_in_one_message_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "space.toml"
    path.write_text(
        "[network]\n"
        "filtres = 32\n"
        'activation = "relux"\n'
        'padding = "same"\n'
        "[stage]\n"
        "kernel_size = 4\n"
        "convs = []\n"
        'padding = ["same", "valid"]\n'
        "[train]\n"
        "lr = { low = 1e-2, high = 1e-4 }\n"
        "[augmnt]\n"
        "flip = true\n"
    )
    assert problems_of(path) == [
        "[network] filtres: unknown key; did you mean 'filters'?",
        "[network] activation: 'relux' is not one of 'relu', 'gelu', 'silu', 'elu'; did you mean 'relu'?",
        "[stage] kernel_size: 4 is even; use odd sizes",
        "[stage] convs: an empty choice list; give at least one value",
        "[train] lr: low <= high must hold, but got low=0.01, high=0.0001",
        "[augmnt]: unknown table; did you mean 'augment'?; valid tables: network, stage, head, train, augment, constraints",
        "[stage] padding: also set in [network]; keep it in [network] for one value per network "
        "or in [stage] for one value per stage",
    ]


def test_keys_in_both_tables_are_reported_in_a_stable_order() -> None:
    with pytest.raises(SpaceError) as caught:
        space_from(
            "[network]\nstride = 1\npadding = 'same'\nactivation = 'relu'\n"
            "[stage]\nstride = 1\npadding = 'same'\nactivation = 'relu'\n"
        )
    assert [line.split(":")[1] for line in str(caught.value).splitlines()] == [
        " [stage] activation",
        " [stage] padding",
        " [stage] stride",
    ]


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(UserError) as caught:
        load_space(path)
    assert str(caught.value) == (
        f"space file not found: {path}; pass an existing .toml file or a shipped space: default, tiny, cifar, sequence"
    )


def test_a_directory_is_refused_as_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        load_space(tmp_path)
    assert str(caught.value) == (
        f"space file {tmp_path} is a directory; pass an existing .toml file or a shipped space: default, tiny, cifar, sequence"
    )


def test_ranges_and_choices_are_read_as_declared() -> None:
    space = space_from(
        "[network]\nfilters = { low = 16, high = 128, log = true }\n"
        "[head]\ndropout = { low = 0, high = 0.5, step = 0.1 }\n"
        "[stage]\nkernel_size = { low = 3, high = 7, step = 2 }\n"
        "[train]\nlr = 1e-3\nbatch_size = [64]\n"
    )
    filters = space.dimensions["network"]["filters"]
    assert (filters.kind, filters.low, filters.high, filters.log, filters.searched) == ("int", 16, 128, True, True)
    assert space.dimensions["head"]["dropout"].kind == "float"
    assert space.dimensions["stage"]["kernel_size"].describe() == "3 .. 7 step 2"
    assert not space.dimensions["train"]["lr"].searched
    assert not space.dimensions["train"]["batch_size"].searched  # a one-value choice is fixed
    assert space.dimension("train", "epochs").value == TrainSettings.epochs  # absent: the default


def test_rows_name_parameters_as_stored() -> None:
    space = space_from(
        "[train]\nlr = { low = 5e-4, high = 2e-2, log = true }\n[stage]\nkernel_size = [3, 5]\n"
        "[head]\ndropout = 0.1\n[constraints]\nmax_params = 2_000_000\n"
    )
    assert space.rows() == [
        ("stage<i>.kernel_size", "choice", "one of 3, 5", "conv kernel side in pixels (odd)"),
        ("head.dropout", "fixed", "0.1", "drop probability before each dense layer"),
        ("train.lr", "float", "0.0005 .. 0.02 (log)", "peak learning rate"),
        ("constraints.max_params", "limit", "2,000,000", "most trainable parameters a candidate may have"),
    ]


# ---- sampling -------------------------------------------------------------------------------
DEFAULT_PARAMS = {
    "network.stages": 2,
    "network.filters": 16,
    "network.width_multiplier": 2.0,
    "network.activation": "relu",
    "network.batch_norm": True,
    "network.pool_type": "max",
    "stage1.convs": 2,
    "stage1.kernel_size": 3,
    "stage1.pool": True,
    "stage2.convs": 1,
    "stage2.kernel_size": 5,
    "stage2.pool": False,
    "head.dense_layers": 0,
    "head.pooling": "gap",
    "head.dropout": 0.0,
    "train.lr": 1e-3,
    "train.weight_decay": 1e-4,
    "train.batch_size": 64,
    "train.label_smoothing": 0.1,
    "augment.translate": 1,
    "augment.cutout": 0,
}


def test_fixed_trial_gives_the_expected_architecture() -> None:
    trial = FixedTrial(DEFAULT_PARAMS)
    arch = load_space(DEFAULT).sample(trial)
    assert arch == Architecture(
        layers=(ConvLayer(16, 3), ConvLayer(16, 3), PoolLayer("max", 2, 2), ConvLayer(32, 5)),
        head=Head(pooling="gap", dense=(), dropout=0.0),
        train=TrainSettings(
            optimizer="adamw", lr=1e-3, weight_decay=1e-4, batch_size=64, epochs=8, label_smoothing=0.1
        ),
        augment=AugmentSettings(translate=1, flip=False, cutout=0),
    )
    assert arch.compact() == "c16k3-c16k3-mp2-c32k5-gap relu+bn"
    assert trial.params == DEFAULT_PARAMS  # every given parameter was asked, nothing else


def test_epochs_option_overrides_the_space_and_is_not_asked() -> None:
    space = space_from("[train]\nepochs = [5, 10]\n")
    arch = space.sample(FixedTrial({}), epochs=3)
    assert arch.train.epochs == 3
    assert space.sample(FixedTrial({"train.epochs": 10})).train.epochs == 10


@pytest.mark.parametrize(
    "convs, pools, expected",
    [((2, 1), (True, True), "c-c-pool-c-pool"), ((1, 1, 1), (True, True, False), "c-pool-c-pool-c")],
)
def test_both_layer_orders_arise_from_fixed_trials(convs, pools, expected) -> None:
    params = {key: value for key, value in DEFAULT_PARAMS.items() if not key.startswith("stage")}
    params["network.stages"] = len(convs)
    for stage, (count, pool) in enumerate(zip(convs, pools), start=1):
        params.update({f"stage{stage}.convs": count, f"stage{stage}.kernel_size": 3, f"stage{stage}.pool": pool})
    arch = load_space(DEFAULT).sample(FixedTrial(params))
    assert kinds(arch) == expected


def test_random_sampling_produces_both_layer_orders() -> None:
    seen = {kinds(arch) for _, arch in study_trials(load_space(DEFAULT), 300)}
    assert {"c-c-pool-c-pool", "c-pool-c-pool-c"} <= seen


def test_filters_grow_by_width_multiplier_rounded() -> None:
    params = dict(
        DEFAULT_PARAMS,
        **{
            "network.stages": 3,
            "network.filters": 24,
            "network.width_multiplier": 1.5,
            "stage3.convs": 1,
            "stage3.kernel_size": 3,
            "stage3.pool": True,
        },
    )
    arch = load_space(DEFAULT).sample(FixedTrial(params))
    assert [layer.filters for layer in arch.layers if layer.kind == "conv"] == [24, 24, 36, 54]


def test_layer_keys_in_stage_are_drawn_per_stage_and_in_network_once() -> None:
    space = space_from(
        "[network]\nstages = 2\npool_type = ['max', 'avg']\n"
        "[stage]\nfilters = [8, 16]\nactivation = ['relu', 'gelu']\nstride = [1, 2]\npool = true\nconvs = 2\n"
    )
    params = {
        "stage1.filters": 8,
        "stage1.activation": "gelu",
        "stage1.stride": 2,
        "stage2.filters": 16,
        "stage2.activation": "relu",
        "stage2.stride": 1,
        "network.pool_type": "avg",
    }
    trial = FixedTrial(params)
    arch = space.sample(trial)
    assert trial.params == params
    assert arch.compact() == "c8k3s2-c8k3-ap2-c16k3-c16k3-ap2-gap gelu/relu+bn"
    assert [layer.activation for layer in arch.layers if layer.kind == "conv"] == ["gelu"] * 2 + ["relu"] * 2


def test_dense_units_asked_only_when_there_are_dense_layers() -> None:
    drawn = study_trials(load_space(DEFAULT), 60)
    for params, arch in drawn:
        assert ("head.dense_units" in params) == (params["head.dense_layers"] > 0)
        assert len(arch.head.dense) == params["head.dense_layers"]
    assert {params["head.dense_layers"] for params, _ in drawn} == {0, 1}


def test_momentum_and_warmup_asked_only_when_they_act() -> None:
    space = space_from(
        "[train]\noptimizer = ['adamw', 'sgd']\nmomentum = [0.8, 0.95]\n"
        "schedule = ['onecycle', 'constant']\nwarmup = [0.1, 0.3]\n"
    )
    drawn = study_trials(space, 60)
    for params, arch in drawn:
        assert ("train.momentum" in params) == (params["train.optimizer"] == "sgd")
        assert ("train.warmup" in params) == (params["train.schedule"] != "constant")
        if params["train.optimizer"] != "sgd":
            assert arch.train.momentum == TrainSettings.momentum  # inactive knobs keep defaults: equal hashes
    assert {params["train.optimizer"] for params, _ in drawn} == {"adamw", "sgd"}
    assert {params["train.schedule"] for params, _ in drawn} == {"onecycle", "constant"}


def test_head_activation_is_not_asked_without_dense_layers() -> None:
    space = space_from("[head]\ndense_layers = [0, 2]\nactivation = ['relu', 'gelu']\n")
    arch = space.sample(FixedTrial({"head.dense_layers": 0}))
    assert arch.head == Head()
    arch = space.sample(FixedTrial({"head.dense_layers": 2, "head.activation": "gelu"}))
    assert arch.head == Head(dense=(128, 128), activation="gelu")


NAME = re.compile(r"^(network|stage[1-9][0-9]*|head|train|augment)\.([a-z_]+)$")
SEQUENCE_NAME = re.compile(r"^(sequence|layer[1-9][0-9]*\.[a-z]+|layer[1-9][0-9]*|head\.dense[1-9][0-9]*)\.([a-z_]+)$")


@pytest.mark.parametrize("space_file", SPACES, ids=lambda path: path.stem)
def test_parameter_names_are_table_dot_key(space_file: Path) -> None:
    space = load_space(space_file)
    names = {name for params, _ in study_trials(space, 40) for name in params}
    assert names
    for name in names:
        if space.form == "sequence" and SEQUENCE_NAME.match(name):
            continue  # sequence.layers, layer3.kind, layer3.conv.filters, head.dense2.units
        match = NAME.match(name)
        assert match, name
        table = "stage" if match[1].startswith("stage") else match[1]
        assert match[2] in TABLES[table], name


def test_sampling_is_reproducible_with_a_seed() -> None:
    space = load_space(DEFAULT)
    first = [arch for _, arch in study_trials(space, 20, seed=7)]
    assert first == [arch for _, arch in study_trials(space, 20, seed=7)]
    assert first != [arch for _, arch in study_trials(space, 20, seed=8)]
