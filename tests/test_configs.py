"""Config files, command-line overrides, validation errors, TOML parity with the reference's reader, JSON round trip."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from absl import flags
from spidr import config as ref

from spidr_jax.config import Config, ConfigError, DinoSRConfig, SpidRConfig
from spidr_jax.config.cli import parse_config, parse_config_dict
from spidr_jax.config.loading import (
    config_dict_to_config,
    config_from_json,
    config_from_mapping,
    config_from_toml,
    config_to_config_dict,
    config_to_json,
    require_fields,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def load_config_file(name: str, *args: str):
    spec = importlib.util.spec_from_file_location(f"configs_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*args)


def normalized(value):
    """Dataclasses and containers as plain dicts and lists, for comparing with the reference."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalized(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# Fields this package adds to the reference's sections (validation sets are DataConfigs too).
OURS_ONLY = {
    "num_static_shapes", "max_bad_fraction", "verify_audio", "resample",  # data
    "layer_loop", "remat", "attention", "strict_resume",  # run
}  # fmt: skip


def without_ours_only(values: dict) -> dict:
    return {k: v for k, v in values.items() if k not in OURS_ONLY}


def assert_same(ours, theirs, where: str) -> None:
    a, b = without_ours_only(normalized(ours)), normalized(theirs)
    assert set(a) == set(b), f"{where}: fields differ: {set(a) ^ set(b)}"
    for key in a:
        assert a[key] == b[key], f"{where}.{key}: {a[key]!r} != {b[key]!r}"


def assert_same_config(ours: Config, theirs: ref.Config) -> None:
    for section in ("run", "data", "model", "optimizer", "masking"):
        assert_same(getattr(ours, section), getattr(theirs, section), section)
    assert set(ours.validation) == set(theirs.validation)
    for name, entry in ours.validation.items():
        assert_same(entry, theirs.validation[name], f"validation.{name}")


def assert_one_line(error: Exception, expected: str) -> None:
    message = str(error)
    assert expected in message
    assert "\n" not in message


def assert_refused(call: Callable[[], object], expected: str) -> None:
    """`call()` raises a ConfigError whose one-line message holds `expected`."""
    with pytest.raises(ConfigError) as info:
        call()
    assert_one_line(info.value, expected)


def args(name: str, *overrides: str) -> list[str]:
    return [f"--config={CONFIGS / name}", *overrides]


# ---- config files -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["base", "dinosr", "tiny"])
def test_config_files_load_and_list_every_field(name):
    cd = load_config_file(name)
    cfg = config_dict_to_config(cd)
    assert set(cd) == {"run", "data", "model", "optimizer", "masking", "validation"}
    # Every field is in the file, so every field can be overridden on the command line.
    for section in ("run", "data", "optimizer", "masking", "model"):
        assert set(cd[section]) == {f.name for f in dataclasses.fields(getattr(cfg, section))}, section
    assert cfg == parse_config(args(f"{name}.py"))


def test_base_equals_reference_defaults():
    cfg = parse_config(args("base.py"))
    assert isinstance(cfg.model, SpidRConfig)
    run = ref.RunConfig(workdir="", wandb_project=cfg.run.wandb_project, wandb_name=cfg.run.wandb_name)
    assert_same(cfg.run, dataclasses.replace(run, model_type="spidr"), "run")
    assert_same(cfg.data, ref.DataConfig(manifest=""), "data")
    assert_same(cfg.model, ref.SpidRConfig(), "model")
    assert_same(cfg.optimizer, ref.OptimizerConfig(), "optimizer")
    assert_same(cfg.masking, ref.MaskingConfig(), "masking")
    assert cfg.validation == {}
    # Float fields are floats, so that an override like --config.model.ema_timescale=1.5e4 parses.
    assert isinstance(load_config_file("base").model.ema_timescale, float)


def test_dinosr_equals_reference_defaults():
    cfg = parse_config(args("dinosr.py"))
    base = parse_config(args("base.py"))
    assert type(cfg.model) is DinoSRConfig
    assert cfg.run.model_type == "dinosr"
    assert_same(cfg.model, ref.DinoSRConfig(), "model")
    assert (cfg.data, cfg.optimizer, cfg.masking) == (base.data, base.optimizer, base.masking)
    assert dataclasses.replace(cfg.run, model_type="spidr") == base.run


def test_tiny_is_small_and_valid():
    cfg = parse_config(args("tiny.py"))
    m, data, opt = cfg.model, cfg.data, cfg.optimizer
    stride = 1
    for _, _, s in m.extractor_conv_layer_config:
        stride *= s
    assert stride == 320  # 50 frames per second, as the reference
    sizes = (m.encoder_embed_dim, m.encoder_num_heads, m.encoder_num_layers, m.encoder_ff_interm_features)
    assert sizes == (96, 2, 4, 192)
    assert (m.num_codebooks, m.codebook_size) == (3, 64)
    assert (opt.dtype, opt.scheduler, opt.max_steps) == ("float32", "constant", 200)
    assert data.max_sample_size == 32_000
    assert data.max_batch_length == 8 * 32_000
    assert data.min_sample_size == 4_000
    assert cfg.run.log_interval == 10
    assert cfg.run.save_interval == 100
    assert cfg.validation == {}
    # The teacher keeps moving through the run: its EMA weight has not dropped below the threshold.
    assert (1 - m.ema_start_decay) * math.exp(-opt.max_steps / m.ema_timescale) > m.ema_threshold
    assert m.freeze_step > opt.max_steps
    # Parameter estimate of the student (the teacher and codebooks roughly double it): well under a million.
    channels, conv = 1, 0
    for c, k, _ in m.extractor_conv_layer_config:
        conv, channels = conv + channels * c * k, c
    d, ff = m.encoder_embed_dim, m.encoder_ff_interm_features
    pos = m.encoder_pos_conv_depth * d * (d // m.encoder_pos_conv_groups) * (m.encoder_pos_conv_kernel // 2)
    layers = m.encoder_num_layers * (4 * d * d + 2 * d * ff)
    heads = m.num_codebooks * d * m.codebook_size
    assert 300_000 < conv + channels * d + pos + layers + heads < 1_000_000


# ---- command line -------------------------------------------------------------------------------------------------


def test_overrides_apply_and_can_be_parsed_repeatedly():
    overrides = [
        "--config.optimizer.lr=1e-4",
        "--config.data.manifest=m.csv",
        "--config.run.workdir=run",
        "--config.optimizer.betas=(0.8, 0.9)",
        "--config.model.extractor_conv_layer_config=((32, 10, 5), (32, 8, 8), (32, 8, 8))",
        "--noconfig.run.compile",
        "--config.run.init_ckpt=ckpt/step_100",
        "--config.data.alignments_path=ali.txt",
        "--config.run.slurm_validation={'account': 'a', 'nodes': 1, 'gpus_per_node': 8}",
        "--config.validation={'dev': {'manifest': 'dev.csv', 'num_workers': 2}}",
        "--config.model.ema_timescale",
        "15000",
    ]
    for _ in range(3):  # private flag values on each call: no global state left behind
        cfg = parse_config(args("base.py", *overrides))
        assert cfg.optimizer.lr == 1e-4
        assert cfg.optimizer.betas == (0.8, 0.9)
        assert (cfg.data.manifest, cfg.run.workdir, cfg.run.compile) == ("m.csv", "run", False)
        assert cfg.model.extractor_conv_layer_config == ((32, 10, 5), (32, 8, 8), (32, 8, 8))
        assert (cfg.run.init_ckpt, cfg.data.alignments_path) == ("ckpt/step_100", "ali.txt")
        assert cfg.run.slurm_validation == {"account": "a", "nodes": 1, "gpus_per_node": 8}
        assert cfg.validation["dev"].manifest == "dev.csv"
        assert cfg.validation["dev"].num_workers == 2
        assert cfg.validation["dev"].max_sample_size == 320_000  # data defaults for the rest
        assert cfg.model.ema_timescale == 15_000.0
    assert parse_config(args("base.py")).optimizer.lr == 5e-4  # nothing carried over from earlier calls


def test_other_arguments_are_left_to_the_caller():
    cd, rest = parse_config_dict(["--steps=3", *args("tiny.py", "--config.optimizer.lr=2e-3"), "--verbose", "x"])
    assert cd.optimizer.lr == 2e-3
    assert rest == ["--steps=3", "--verbose", "x"]
    # The caller's own absl flags parse what is left.
    caller = flags.FlagValues()
    flags.DEFINE_integer("steps", 1, "steps", flag_values=caller)
    flags.DEFINE_bool("verbose", default=False, help="verbose", flag_values=caller)
    assert caller(["prog", *rest]) == ["prog", "x"]
    assert (caller.steps, caller.verbose) == (3, True)
    with pytest.raises(ConfigError, match="unrecognized argument '--steps=3'"):
        parse_config(["--steps=3", *args("tiny.py")], strict=True)
    assert parse_config(["--config.optimizer.max_steps=7"], default=str(CONFIGS / "tiny.py")).optimizer.max_steps == 7


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["--config.optimizer.lrr=1"], "unknown field optimizer.lrr (did you mean 'lr'?)"),
        (["--config.optimizer.max_steps=abc"], "optimizer.max_steps must be an integer, got 'abc'"),
        (["--config.optimizer.lr=abc"], "optimizer.lr must be a number, got 'abc'"),
        (["--config.run.compile=maybe"], "run.compile must be true or false"),
        (["--config.optimizer.betas=(0.9,)"], "optimizer.betas must be a list of 2 numbers"),
        (["--config.optimizer.betas=(0.9, 1.0)"], "optimizer.betas[1] must be in [0, 1)"),
        (["--config.optimizer.dtype=float8"], "optimizer.dtype must be one of 'float32', 'float16', 'bfloat16'"),
        (["--config.optimizer.scheduler=linear"], "optimizer.scheduler must be one of"),
        (["--config.optimizer.max_steps=0"], "optimizer.max_steps must be positive"),
        (["--config.run.log_interval=0"], "run.log_interval must be positive"),
        (["--config.run.save_interval=-5"], "run.save_interval must be positive"),
        (["--config.run.model_type=hubert"], "run.model_type must be one of 'dinosr', 'spidr'"),
        (["--config.run.model_type=dinosr"], "model.ema_threshold and model.ema_timescale only apply to SpidR"),
        (["--config.masking.mask_selection=gaussian"], "masking.mask_selection must be one of"),
        (["--config.masking.mask_prob=-0.5"], "masking.mask_prob must be a finite number >= 0"),
        (["--config.masking.mask_channel_length=0"], "masking.mask_channel_length must be >= 1"),
        (
            ["--config.masking.mask_selection=uniform", "--config.masking.mask_other=25"],
            "masking.mask_other (25.0) must be <= 2 * masking.mask_length (20)",
        ),
        (
            ["--config.data.max_batch_length=1000"],
            "data.max_batch_length (1000) must be >= data.max_sample_size (320000)",
        ),
        (["--config.data.min_sample_size=400000"], "data.min_sample_size (400000) must be <= data.max_sample_size"),
        (["--config.model.encoder_num_heads=7"], "model.encoder_embed_dim (768) must be divisible"),
        (["--config.model.extractor_conv_layer_config=((512, 10),)"], "model.extractor_conv_layer_config[0] must be"),
        (["--config.validation.dev.manifest=x"], "unknown field validation.dev (add validation sets with"),
        (["--config.validation={'dev': {'num_workers': 2}}"], "validation.dev.manifest is required"),
        (["--config.validation={'dev': {'manifest': 'x', 'nworkers': 2}}"], "unknown field validation.dev.nworkers"),
        (["--config.optimizer.lr.x=1"], "unknown field optimizer.lr.x: optimizer.lr is not a section"),
        (["--config.data.num_workers=-1"], "data.num_workers must be >= 0"),
    ],
)
def test_bad_overrides_fail_with_one_line_naming_the_field(overrides, expected):
    assert_refused(lambda: parse_config(args("base.py", *overrides)), expected)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "a config file is required: pass --config=configs/base.py"),
        (["--config.optimizer.lr=1"], "--config.optimizer.lr needs a config file"),
        (["--config=configs/missing.py"], "config file not found: configs/missing.py"),
        ([f"--config={CONFIGS / 'toml.py'}"], "configs/toml.py needs a TOML file"),
        ([f"--config={CONFIGS / 'toml.py'}:missing.toml"], "TOML config not found: missing.toml"),
        ([f"--config={CONFIGS / 'base.py'}:variant"], "cannot load config"),
        (
            ["--config=run.toml"],
            "not a Python file: run.toml (for a TOML run config: --config=configs/toml.py:run.toml)",
        ),
    ],
)
def test_bad_config_files(argv, expected):
    assert_refused(lambda: parse_config(argv), expected)


def test_cli_module_prints_json_or_one_error_line():
    command = [sys.executable, "-m", "spidr_jax.config.cli", *args("tiny.py", "--config.run.workdir=w")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    assert config_from_json(done.stdout) == parse_config(args("tiny.py", "--config.run.workdir=w"))
    done = subprocess.run([*command, "--config.optimizer.lrr=1"], capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: unknown field optimizer.lrr (did you mean 'lr'?)"]


# ---- checks on mappings and helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"runs": {}}, "unknown config section 'runs' (did you mean 'run'?)"),
        ({"run": {"model_type": "dinosr"}, "model": {"ema_timescale": 1.0}}, "model.ema_timescale only apply to SpidR"),
        ({"model": {"encoder_dim": 1}}, "unknown field model.encoder_dim"),
        ({"optimizer": {"lr": "fast"}}, "optimizer.lr must be a number, got 'fast'"),
        ({"optimizer": {"to_freeze": "teacher"}}, "optimizer.to_freeze must be a list of strings"),
        ({"optimizer": {"max_steps": 1.5}}, "optimizer.max_steps must be an integer"),
        ({"run": {"log_interval": True}}, "run.log_interval must be an integer"),
        ({"data": []}, "data must be a section"),
        (
            {"validation": {"dev": {"manifest": "d.csv", "max_batch_length": 10}}},
            "validation.dev.max_batch_length (10)",
        ),
    ],
)
def test_mapping_errors(data, expected):
    assert_refused(lambda: config_from_mapping(data), expected)


def test_require_fields():
    cfg = parse_config(args("base.py", "--config.run.workdir=w"))
    with pytest.raises(ConfigError, match=r"^data.manifest is required: pass --config.data.manifest=FILE$"):
        require_fields(cfg, ["run.workdir", "data.manifest"])
    with pytest.raises(ConfigError, match=r"^run.workdir is required: pass --config.run.workdir=DIR$"):
        require_fields(parse_config(args("base.py")), ["run.workdir"])
    require_fields(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, manifest="m")), ["data.manifest"])


# ---- TOML and JSON -------------------------------------------------------------------------------------------------

TOML_MINIMAL = """
[run]
workdir = "runs"
wandb_project = "proj"
wandb_name = "name"

[data]
manifest = "train.csv"
"""

TOML_SPIDR = """
[run]
workdir = "runs"
wandb_project = "proj"
wandb_name = "spidr"
model_type = "spidr"
log_interval = 50
init_ckpt = "init.pt"
slurm_validation = { account = "acc", nodes = 1, gpus_per_node = 2, qos = "dev" }

[data]
manifest = "train.csv"
max_batch_length = 1_000_000
num_workers = 4
alignments_path = "ali.txt"

[model]
extractor_conv_layer_config = [[256, 10, 5], [256, 8, 4], [256, 4, 4], [256, 4, 4]]
encoder_embed_dim = 384
encoder_num_heads = 6
encoder_num_layers = 6
num_codebooks = 4
ema_timescale = 5000
ema_exclude_layers = ["pos_conv_embed", "layer_norm"]

[optimizer]
lr = 1
betas = [0.9, 0.98]
dtype = "float16"
scheduler = "cosine"
to_freeze = []

[masking]
mask_prob = 0.65
mask_selection = "uniform"
mask_other = 2

[validation.dev]
manifest = "dev.csv"
num_workers = 1

[validation.test]
manifest = "test.csv"
max_sample_size = 100_000
"""

TOML_DINOSR = """
[run]
workdir = "runs"
wandb_project = "proj"
wandb_name = "dinosr"
model_type = "dinosr"

[data]
manifest = "train.csv"

[model]
encoder_layer_drop = 0.1
freeze_step = 1000
"""


@pytest.mark.parametrize("text", [TOML_MINIMAL, TOML_SPIDR, TOML_DINOSR], ids=["defaults", "spidr", "dinosr"])
def test_toml_matches_reference_reader(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    cd = config_from_toml(path)
    ours = config_dict_to_config(cd)
    assert_same_config(ours, ref.read_config(path))
    # The same through the command line, with an override of a field the file does not set.
    cfg = parse_config([f"--config={CONFIGS / 'toml.py'}:{path}", "--config.data.num_buckets=7"])
    assert cfg == dataclasses.replace(ours, data=dataclasses.replace(ours.data, num_buckets=7))


def test_toml_defaults_to_dinosr_like_the_reference(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(TOML_MINIMAL)
    cfg = config_dict_to_config(config_from_toml(path))
    assert type(cfg.model) is DinoSRConfig
    assert cfg.run.model_type == "dinosr"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[optimizer]\nlrr = 1\n", "unknown field optimizer.lrr (did you mean 'lr'?)"),
        ("[optimizer]\nlr = 'abc'\n", "optimizer.lr must be a number, got 'abc'"),
        ("[optimizer]\nbetas = [0.9]\n", "optimizer.betas must be a list of 2 numbers, got [0.9]"),
        ("[runs]\nworkdir = 'x'\n", "unknown section [runs]"),
        ("[model]\nema_timescale = 10\n", "model.ema_timescale only apply to SpidR, but run.model_type is 'dinosr'"),
        ("[run]\nmodel_type = 'spidr'\n[model]\nema_timescal = 10\n", "unknown field model.ema_timescal"),
        ("[validation.dev]\nmanifest = 'd.csv'\nbucket = 'x'\n", "unknown field validation.dev.bucket"),
        ("[data\n", "invalid TOML"),
    ],
)
def test_toml_errors(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert_refused(lambda: config_from_toml(path), expected)


@pytest.mark.parametrize("name", ["base.py", "dinosr.py", "tiny.py"])
def test_json_round_trip(tmp_path, name):
    cfg = parse_config(
        args(
            name,
            "--config.run.init_ckpt=c.pt",
            "--config.run.slurm_validation={'account': 'a', 'nodes': 2, 'gpus_per_node': 4}",
            "--config.validation={'dev': {'manifest': 'dev.csv', 'alignments_path': 'ali.txt'}}",
        )
    )
    text = config_to_json(cfg)
    assert set(json.loads(text)) == {"run", "data", "model", "optimizer", "masking", "validation"}
    assert config_from_json(text) == cfg
    path = tmp_path / "config.json"
    path.write_text(text)
    assert config_from_json(path) == cfg
    assert config_from_json(str(path)) == cfg
    # The reference reads it too, once the fields it does not know are left out.
    data = json.loads(text)
    data["run"], data["data"] = without_ours_only(data["run"]), without_ours_only(data["data"])
    data["validation"] = {name: without_ours_only(entry) for name, entry in data["validation"].items()}
    (tmp_path / "reference.json").write_text(json.dumps(data))
    assert_same_config(cfg, ref.read_config(tmp_path / "reference.json"))
    assert config_dict_to_config(config_to_config_dict(cfg)) == cfg


def test_json_errors(tmp_path):
    with pytest.raises(ConfigError, match="invalid JSON"):
        config_from_json("{not json")
    with pytest.raises(ConfigError, match="JSON config not found"):
        config_from_json(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match=r"unknown field optimizer\.lrr"):
        config_from_json('{"optimizer": {"lrr": 1}}')
