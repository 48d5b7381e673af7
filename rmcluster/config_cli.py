"""Command-line flags generated from the typed config, so there is no second list of defaults.

Each leaf field of a config section becomes `--field-name` (or the name in its `cli` extra). Flags
default to "not given", so a YAML config supplies values and the flags given override them.
"""

from __future__ import annotations

import argparse
import typing
from typing import Any, Iterator, Literal, Optional

from pydantic import BaseModel

from .config import RMConfig, load_yaml_mapping


def _leaves(model_cls: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, field in model_cls.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaves(ann, prefix + (name,))
        else:
            yield prefix + (name,), field


def _flag(path: tuple[str, ...], field: Any) -> str:
    extra = field.json_schema_extra or {}
    return extra.get("cli") or "--" + path[-1].replace("_", "-")


def _arg_spec(annotation: Any) -> dict:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if typing.get_origin(annotation) is typing.Union and len(args) == 1 else annotation
    if typing.get_origin(base) is Literal:
        return {"choices": list(typing.get_args(base))}
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    if base in (int, float):
        return {"type": base, "metavar": base.__name__.upper()}
    return {"type": str, "metavar": "TEXT"}


def add_config_flags(parser: argparse.ArgumentParser, config_cls: type[BaseModel] = RMConfig) -> None:
    group = parser.add_argument_group("scoring config (overrides --config)")
    group.add_argument("--config", help="YAML file with the same keys as the config model")
    for path, field in _leaves(config_cls):
        group.add_argument(
            _flag(path, field),
            dest="cfg__" + "__".join(path),
            default=argparse.SUPPRESS,
            help=(field.description or "") + (" [required]" if field.is_required() else f" [default: {field.default}]"),
            **_arg_spec(field.annotation),
        )


def config_from_args(args: argparse.Namespace, config_cls: type[BaseModel] = RMConfig, section: Optional[str] = None) -> Any:
    """YAML (--config, optionally one `section` of it), then the flags that were given, validated."""
    data: dict = load_yaml_mapping(args.config) if getattr(args, "config", None) else {}
    if section is not None:
        data = data.get(section) or {}
    if isinstance(data.get("model"), str):
        data["model"] = {"name": data["model"]}
    for dest, value in vars(args).items():
        if not dest.startswith("cfg__"):
            continue
        *parents, leaf = dest[len("cfg__"):].split("__")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return config_cls.model_validate(data)
