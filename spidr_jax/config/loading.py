"""Conversions between `ml_collections.ConfigDict` configs, the frozen `Config` dataclasses, TOML and JSON.

A `ConfigDict` is what config files (`configs/*.py`) build and what command-line overrides edit; `Config` is what the
trainer uses. `config_dict_to_config` checks every field (name, type, range, consistency across fields) and raises
`ConfigError` with one line naming the field, before anything is built or compiled.

TOML files use the reference's layout: sections `run`, `data`, `model`, `optimizer`, `masking` and
`validation.<name>`, the `model` fields chosen by `run.model_type` (default "dinosr"). JSON files use the same layout.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from ml_collections import config_dict

from spidr_jax.config.checks import check_config
from spidr_jax.config.model import CONFIG_CLASSES, ConfigError, DinoSRConfig, SpidRConfig, model_config_from_dict
from spidr_jax.config.run import Config, DataConfig, MaskingConfig, OptimizerConfig, RunConfig

_T = TypeVar("_T")
SECTIONS = ("run", "data", "model", "optimizer", "masking", "validation")
_SECTION_CLASSES: dict[str, type] = {
    "run": RunConfig,
    "data": DataConfig,
    "optimizer": OptimizerConfig,
    "masking": MaskingConfig,
}
_SPIDR_ONLY = frozenset(f.name for f in dataclasses.fields(SpidRConfig)) - {
    f.name for f in dataclasses.fields(DinoSRConfig)
}
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
_SINGULARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def config_to_config_dict(cfg: Config) -> config_dict.ConfigDict:
    """The `ConfigDict` of `cfg`, unlocked; `None` values become typed placeholders so they can be overridden."""
    out = config_dict.ConfigDict()
    for name in ("run", "data", "model", "optimizer", "masking"):
        out[name] = _section_to_config_dict(getattr(cfg, name))
    out.validation = config_dict.ConfigDict({k: _section_to_config_dict(v) for k, v in cfg.validation.items()})
    return out


def config_dict_to_config(cd: config_dict.ConfigDict | Mapping[str, Any]) -> Config:
    """Check every field of `cd` and build the frozen `Config`; raises `ConfigError` naming the first bad field."""
    data = cd.to_dict() if isinstance(cd, config_dict.ConfigDict) else dict(cd)
    return config_from_mapping(data)


def config_from_mapping(data: Mapping[str, Any]) -> Config:
    """Build and check a `Config` from nested dicts (parsed TOML or JSON, or `ConfigDict.to_dict()`).

    Missing sections and fields take the defaults of `spidr_jax.config.run` and `spidr_jax.config.model`.
    """
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section {unknown[0]!r}{_suggest(unknown[0], SECTIONS)}")
    run = _build_section(RunConfig, data.get("run"), "run")
    model = _build_model(run.model_type, data.get("model"))
    validation_values = _mapping(data.get("validation"), "validation")
    validation = {}
    for name, values in validation_values.items():
        entry = _build_section(DataConfig, values, f"validation.{name}")
        if not entry.manifest:
            raise ConfigError(f"validation.{name}.manifest is required (each validation set needs a manifest)")
        validation[str(name)] = entry
    cfg = Config(
        run=run,
        data=_build_section(DataConfig, data.get("data"), "data"),
        model=model,
        optimizer=_build_section(OptimizerConfig, data.get("optimizer"), "optimizer"),
        masking=_build_section(MaskingConfig, data.get("masking"), "masking"),
        validation=validation,
    )
    check_config(cfg)
    return cfg


def require_fields(cfg: Config, names: Sequence[str]) -> None:
    """Raise `ConfigError` for the first of `names` ("run.workdir", "data.manifest", ...) that is empty or None."""
    hints = {"workdir": "DIR", "manifest": "FILE", "init_ckpt": "CHECKPOINT", "alignments_path": "FILE"}
    for name in names:
        value: Any = cfg
        for part in name.split("."):
            value = value[part] if isinstance(value, Mapping) else getattr(value, part)
        if value is None or value == "":
            hint = hints.get(name.rsplit(".", 1)[-1], "VALUE")
            raise ConfigError(f"{name} is required: pass --config.{name}={hint}")


def config_from_toml(path: str | Path) -> config_dict.ConfigDict:
    """Read a reference TOML run config into a complete `ConfigDict` (every field, defaults filled in).

    Unknown sections or fields and values of the wrong type raise `ConfigError`; range checks happen in
    `config_dict_to_config`, so command-line overrides can still fix a value.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"TOML config not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section [{unknown[0]}]{_suggest(unknown[0], SECTIONS)}")
    run_values = _mapping(data.get("run"), "run")
    # The reference's default model type, when a TOML file does not name one.
    model_hint = typing.get_type_hints(RunConfig)["model_type"]
    model_type = str(_coerce(run_values.get("model_type", "dinosr"), model_hint, "run.model_type"))
    defaults = Config(run=RunConfig(model_type=model_type), model=CONFIG_CLASSES[model_type]())
    out = config_to_config_dict(defaults)
    for section in ("run", "data", "optimizer", "masking"):
        _overlay(out[section], _SECTION_CLASSES[section], data.get(section), section)
    _check_model_fields(model_type, _mapping(data.get("model"), "model"))
    _overlay(out.model, CONFIG_CLASSES[model_type], data.get("model"), "model")
    for name, values in _mapping(data.get("validation"), "validation").items():
        entry = _section_to_config_dict(DataConfig())
        _overlay(entry, DataConfig, values, f"validation.{name}")
        out.validation[name] = entry
    return out


def config_to_json(cfg: Config) -> str:
    """The reference's run-config JSON (sections run, data, model, optimizer, masking, validation)."""
    data = {
        "run": dataclasses.asdict(cfg.run),
        "data": dataclasses.asdict(cfg.data),
        "model": cfg.model.to_dict(),
        "optimizer": dataclasses.asdict(cfg.optimizer),
        "masking": dataclasses.asdict(cfg.masking),
        "validation": {name: dataclasses.asdict(entry) for name, entry in cfg.validation.items()},
    }
    return json.dumps(data, indent=4)


def config_from_json(path_or_text: str | Path) -> Config:
    """Read a JSON run config (ours or the reference's `config.json`), from a file or from the JSON text itself."""
    is_text = isinstance(path_or_text, str) and path_or_text.lstrip().startswith("{")
    where = "JSON config" if is_text else str(path_or_text)
    try:
        text = path_or_text if is_text else Path(path_or_text).read_text(encoding="utf-8")
        data = json.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"JSON config not found: {path_or_text}") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{where}: invalid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object with sections {', '.join(SECTIONS)}")
    return config_from_mapping(data)


def _section_to_config_dict(section: object) -> config_dict.ConfigDict:
    """One dataclass section as a `ConfigDict`, with placeholders typed after the field's annotation."""
    hints = typing.get_type_hints(type(section))
    out = config_dict.ConfigDict()
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if value is None:
            inner = next(t for t in typing.get_args(hints[f.name]) if t is not type(None))
            out[f.name] = config_dict.placeholder(config_dict.ConfigDict if inner is dict else inner)
        elif isinstance(value, dict):
            out[f.name] = config_dict.ConfigDict(value)
        else:
            # Typed after the annotation (20_000 -> 20000.0) so overrides parse as the field's type.
            out[f.name] = _coerce(value, hints[f.name], f.name)
    return out


def _overlay(target: config_dict.ConfigDict, cls: type, values: object, prefix: str) -> None:
    """Set the fields of `values` (one TOML section) on `target`, checking names and types."""
    values = _mapping(values, prefix)
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"unknown field {prefix}.{key}{_suggest(key, hints)}")
        coerced = _coerce(value, hints[key], f"{prefix}.{key}")
        target[key] = config_dict.ConfigDict(coerced) if isinstance(coerced, dict) else coerced


def _build_section(cls: type[_T], values: object, prefix: str) -> _T:
    """Instantiate one section dataclass from a dict, checking field names and types."""
    values = _mapping(values, prefix)
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(f"unknown field {prefix}.{unknown[0]}{_suggest(unknown[0], hints)}")
    return cls(**{k: _coerce(v, hints[k], f"{prefix}.{k}") for k, v in values.items()})


def _check_model_fields(model_type: str, values: Mapping[str, Any]) -> None:
    """Reject SpidR-only fields in a DinoSR config and unknown model fields, naming the field."""
    hints = typing.get_type_hints(CONFIG_CLASSES[model_type])
    spidr_only = sorted(k for k in values if k in _SPIDR_ONLY and k not in hints)
    if spidr_only:
        names = " and ".join(f"model.{k}" for k in spidr_only)
        raise ConfigError(f"{names} only apply to SpidR, but run.model_type is {model_type!r}")
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(f"unknown field model.{unknown[0]}{_suggest(unknown[0], hints)}")


def _build_model(model_type: str, values: object) -> DinoSRConfig:
    """The model config of `model_type`, its fields checked for names and types, then by the model module."""
    values = _mapping(values, "model")
    _check_model_fields(model_type, values)
    hints = typing.get_type_hints(CONFIG_CLASSES[model_type])
    return model_config_from_dict(model_type, {k: _coerce(v, hints[k], f"model.{k}") for k, v in values.items()})


def _mapping(values: object, prefix: str) -> Mapping[str, Any]:
    """A section's values as a mapping (an absent section is empty)."""
    if values is None:
        return {}
    if isinstance(values, config_dict.ConfigDict):
        return values.to_dict()
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix} must be a section (a table of fields), got {_short(values)}")
    return values


def _coerce(value: object, hint: object, path: str) -> Any:  # noqa: ANN401, C901, PLR0912 (one branch per kind of type)
    """`value` checked against the type annotation `hint`: lists become tuples, integers become floats."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in {typing.Union, types.UnionType}:
        if value is None and type(None) in args:
            return None
        (inner,) = (t for t in args if t is not type(None))
        return _coerce(value, inner, path)
    if origin is Literal:
        if value not in args or not isinstance(value, str):
            raise ConfigError(f"{path} must be one of {', '.join(map(repr, args))}, got {_short(value)}")
        return value
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif hint is dict or origin is dict:
        if isinstance(value, config_dict.ConfigDict):
            value = value.to_dict()
        ok = isinstance(value, Mapping)
        value = dict(value) if ok else value
    elif origin is tuple:
        variadic = len(args) == 2 and args[1] is Ellipsis
        if not isinstance(value, (list, tuple)) or (not variadic and len(value) != len(args)):
            raise ConfigError(f"{path} must be {_describe(hint)}, got {_short(value)}")
        items = args[:1] * len(value) if variadic else args
        return tuple(_coerce(v, t, f"{path}[{i}]") for i, (v, t) in enumerate(zip(value, items, strict=True)))
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise ConfigError(f"{path} must be {_describe(hint)}, got {_short(value)}")
    return value


def _describe(hint: object, *, plural: bool = False) -> str:
    """A type annotation in words: "an integer", "a list of 2 numbers", "a list of strings"."""
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"{'lists' if plural else 'a list'} of {_describe(args[0], plural=True)}"
        return f"{'lists' if plural else 'a list'} of {len(args)} {_describe(args[0], plural=True)}"
    if hint is dict:
        return "tables" if plural else "a table"
    return (_PLURALS if plural else _SINGULARS).get(hint, getattr(hint, "__name__", str(hint)))


def _suggest(name: str, known: Iterable[object]) -> str:
    """A "did you mean" hint with the closest known name, or nothing."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _short(value: object) -> str:
    """A value's repr on one line, cut to 80 characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."
