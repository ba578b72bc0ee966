"""Command-line configs shared by the entry points: `--config=FILE` plus `--config.SECTION.FIELD=VALUE` overrides.

    python -m spidr_jax.config --config=configs/base.py --config.optimizer.lr=1e-4 --config.run.workdir=run
    python -m spidr_jax.config --config=configs/toml.py:path/to/run.toml --config.data.manifest=train.csv

`FILE` is a Python file whose `get_config()` returns an `ml_collections.ConfigDict` (`FILE:ARG` calls
`get_config(ARG)`); overrides are parsed by `ml_collections.config_flags` with the type of the field they replace.
Validation sets are added as a whole: `--config.validation="{'dev': {'manifest': 'dev.csv'}}"`.
Run as a module (`python -m spidr_jax.config`, or `python -m spidr_jax.config.cli`), this prints the resolved config
as JSON, every field with its value (or one error line and exit code 2): the list of fields to override.

Parsing uses a private `absl.flags.FlagValues` on each call, so it can be called several times in one process and
leaves the caller's own flags (absl or argparse) alone: arguments that are not `--config...` are returned to it.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from absl import flags
from ml_collections import config_dict, config_flags

from spidr_jax.config.loading import config_dict_to_config, config_to_json, require_fields
from spidr_jax.config.model import ConfigError
from spidr_jax.config.run import Config

__all__ = ["ConfigError", "parse_config", "parse_config_dict", "parse_config_or_exit", "require_fields"]

_PROGRAM = "spidr_jax"
_FLAG = "config"
_CONFIG_ARG = re.compile(rf"^--?{_FLAG}(=|$)")
_OVERRIDE_ARG = re.compile(rf"^--?(no)?{_FLAG}\.")
# absl's parsers for overridable field types, in words for error messages.
_PARSER_TYPES = {
    flags.IntegerParser: "an integer",
    flags.FloatParser: "a number",
    flags.BooleanParser: "true or false",
}


def parse_config(argv: Sequence[str] | None = None, *, default: str | None = None, strict: bool = False) -> Config:
    """The checked `Config` from `--config=FILE` and its overrides in `argv` (without the program name).

    `default` is the config file used when `argv` has no `--config`. Arguments that are not for the config flag are
    ignored, unless `strict`, where they are an error. Raises `ConfigError` with one line naming the field.
    """
    cd, rest = parse_config_dict(argv, default=default)
    if strict and rest:
        raise ConfigError(f"unrecognized argument {rest[0]!r}")
    return config_dict_to_config(cd)


def parse_config_or_exit(
    argv: Sequence[str] | None = None, *, default: str | None = None, strict: bool = False
) -> Config:
    """`parse_config` for `main()` functions: a bad config prints `error: <message>` and exits with code 2."""
    try:
        return parse_config(argv, default=default, strict=strict)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def parse_config_dict(
    argv: Sequence[str] | None = None, *, default: str | None = None
) -> tuple[config_dict.ConfigDict, list[str]]:
    """The config file's `ConfigDict` with the overrides applied (locked), and the arguments left for the caller.

    Field names and values are checked here; ranges and consistency are checked by `config_dict_to_config`.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    spec = _config_spec(args) or default
    overrides = _override_paths(args)
    if spec is None:
        if overrides:
            raise ConfigError(f"--{_FLAG}.{overrides[0]} needs a config file: pass --{_FLAG}=configs/base.py first")
        raise ConfigError(f"a config file is required: pass --{_FLAG}=configs/base.py")
    # Load once directly so errors in the file (a bad TOML path, a ConfigError) surface as themselves.
    _check_override_paths(_load_config_file(spec), overrides)
    if default is not None and _config_spec(args) is None:
        args = [f"--{_FLAG}={default}", *args]
    values = flags.FlagValues()
    holder = config_flags.DEFINE_config_file(
        _FLAG, None, "config file: PATH or PATH:ARG", flag_values=values, sys_argv=[_PROGRAM, *args]
    )
    try:
        with warnings.catch_warnings():
            # ml_collections loads the file with importlib's deprecated load_module().
            warnings.simplefilter("ignore", DeprecationWarning)
            rest = values([_PROGRAM, *args], known_only=True)
    except flags.IllegalFlagValueError as error:
        raise ConfigError(_describe_flag_error(values, str(error))) from None
    except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as error:
        raise ConfigError(_one_line(str(error))) from None
    return holder.value, rest[1:]


def _config_spec(args: Sequence[str]) -> str | None:
    """The value of the last `--config=...` (or `--config VALUE`) in `args`."""
    spec = None
    for i, arg in enumerate(args):
        if _CONFIG_ARG.match(arg):
            if "=" in arg:
                spec = arg.split("=", 1)[1]
            elif i + 1 < len(args):
                spec = args[i + 1]
    return spec


def _override_paths(args: Sequence[str]) -> list[str]:
    """The field paths overridden by `--config.PATH=...` arguments, in order."""
    return [arg.split("=", 1)[0].split(".", 1)[1] for arg in args if _OVERRIDE_ARG.match(arg)]


def _load_config_file(spec: str) -> config_dict.ConfigDict:
    """`get_config()` (or `get_config(ARG)` for `PATH:ARG`) of a config file."""
    path, *arg = spec.split(":", 1)
    if not path.endswith(".py"):
        hint = f" (for a TOML run config: --{_FLAG}=configs/toml.py:{path})" if path.endswith(".toml") else ""
        raise ConfigError(f"config file is not a Python file: {path}{hint}")
    if not Path(path).is_file():
        raise ConfigError(f"config file not found: {path}")
    module_spec = importlib.util.spec_from_file_location(f"{_FLAG}_file", path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"cannot load config file: {path}")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
        cd = module.get_config(*arg)
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 (any failure of user code is reported as one line)
        raise ConfigError(f"cannot load config {spec}: {type(error).__name__}: {_one_line(str(error))}") from None
    if not isinstance(cd, config_dict.ConfigDict):
        raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict, got {type(cd).__name__}")
    return cd


def _check_override_paths(cd: config_dict.ConfigDict, paths: Sequence[str]) -> None:
    """Raise `ConfigError` for the first override that names no existing field."""
    for path in paths:
        node: Any = cd
        parts = path.split(".")
        for depth, part in enumerate(parts):
            prefix = ".".join(parts[: depth + 1])
            if not isinstance(node, config_dict.ConfigDict):
                raise ConfigError(f"unknown field {prefix}: {'.'.join(parts[:depth])} is not a section")
            if part not in node:
                raise ConfigError(f"unknown field {prefix}{_hint(parts[:depth], part, node)}")
            node = node[part]


def _hint(parents: list[str], part: str, node: config_dict.ConfigDict) -> str:
    """A suggestion for an unknown field: the closest name, or how to add a validation set."""
    if parents == ["validation"]:
        return f" (add validation sets with --{_FLAG}.validation=\"{{'{part}': {{'manifest': 'FILE'}}}}\")"
    close = difflib.get_close_matches(part, list(node.keys()), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _describe_flag_error(values: flags.FlagValues, message: str) -> str:
    """Turn absl's "flag --config.a.b=v: reason" into "a.b must be <type>, got 'v'"."""
    match = re.match(rf"flag --{_FLAG}\.([^=]+)=(.*?): (.*)", message, flags=re.DOTALL)
    if match is None:
        return _one_line(message)
    path, value, reason = match.groups()
    name = f"{_FLAG}.{path}"
    parser = values[name].parser if name in values else None
    kind = next((words for cls, words in _PARSER_TYPES.items() if isinstance(parser, cls)), None)
    if kind is None:
        return f"{path}: {_one_line(reason)}"
    return f"{path} must be {kind}, got {value!r}"


def _one_line(message: str) -> str:
    """The message's first non-empty line."""
    return next((line.strip() for line in message.splitlines() if line.strip()), message.strip())


HELP = """usage: python -m spidr_jax.config --config=FILE[:ARG] [--config.SECTION.FIELD=VALUE ...]

Print the resolved config of a training run as JSON: every section and field, with its value. Any field can be
overridden with --config.SECTION.FIELD=VALUE, here as in python -m spidr_jax.train and python -m spidr_jax.launch.

  --config=FILE[:ARG]   a config file: configs/base.py (SpidR), configs/dinosr.py, configs/tiny.py,
                        configs/demo.py, or configs/toml.py:RUN.toml for a reference TOML run config
  --config.SECTION.FIELD=VALUE
                        override one field (sections: run, data, model, optimizer, masking, validation)

    python -m spidr_jax.config --config=configs/base.py --config.optimizer.lr=1e-4
"""


def main(argv: Sequence[str] | None = None) -> None:
    """Print the resolved config as JSON; exit 2 with one error line if it is invalid."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(HELP, end="")
        return
    cfg = parse_config_or_exit(args, strict=True)
    print(config_to_json(cfg))


if __name__ == "__main__":
    main()
