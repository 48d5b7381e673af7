"""Command-line flags generated from the typed config, so there is no second list of defaults.

Each leaf field of a config section becomes `--field-name` (or the name in its `cli` extra). A
section that is a union of models (the model kinds) contributes the leaves of every member, once
each. Flags default to "not given", so a YAML config supplies values and the flags given override
them. Shorthands such as `model: <name>` are the validators' business: where a flag reaches into a
section that YAML gave in a short form, the section's own validator expands it first.
"""

from __future__ import annotations

import argparse
import typing
from typing import Any, Iterator, Literal, Optional

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from .config import RMConfig, load_yaml_mapping

Path = tuple[str, ...]


def _members(annotation: Any) -> list[type[BaseModel]]:
    """The model classes an annotation admits: itself, or the members of a (discriminated) union."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) is typing.Union:
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    return []


def _leaves(model_cls: type[BaseModel], prefix: Path = ()) -> Iterator[tuple[Path, FieldInfo, list[str]]]:
    """(path, field, the model kinds declaring it; empty outside a kind union) for every leaf field."""
    for name, field in model_cls.model_fields.items():
        members = _members(field.annotation)
        if len(members) == 1:
            yield from _leaves(members[0], prefix + (name,))
        elif members:
            seen: dict[Path, tuple[FieldInfo, list[str]]] = {}
            for member in members:
                kind = typing.get_args(member.model_fields["kind"].annotation)[0]
                for sub, f, _ in _leaves(member):  # a kind's own sections (a judge's `generate`) nest
                    seen.setdefault(sub, (f, []))[1].append(kind)
            for sub, (f, kinds) in seen.items():
                if sub == ("kind",):  # one flag whose choices are every member's kind
                    f = FieldInfo.merge_field_infos(f, annotation=Literal[tuple(kinds)])
                yield prefix + (name, *sub), f, [] if len(kinds) == len(members) else kinds
        else:
            yield prefix + (name,), field, []


def _flag(path: Path, field: FieldInfo) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return str(extra.get("cli") or "--" + path[-1].replace("_", "-"))


def _arg_spec(annotation: Any) -> dict[str, Any]:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if typing.get_origin(annotation) is typing.Union and len(args) == 1 else annotation
    if typing.get_origin(base) is Literal:
        return {"choices": list(typing.get_args(base))}
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    if base in (int, float):
        return {"type": base, "metavar": base.__name__.upper()}
    if typing.get_origin(base) is list:
        return {"type": str, "nargs": "+", "metavar": "TEXT"}
    return {"type": str, "metavar": "TEXT"}


def _help(field: FieldInfo, kinds: list[str]) -> str:
    default = " [required]" if field.is_required() else f" [default: {field.default}]"
    scope = f" (kind: {', '.join(kinds)})" if kinds else ""
    return (field.description or "") + scope + default


def add_config_flags(parser: argparse.ArgumentParser, config_cls: type[BaseModel] = RMConfig) -> None:
    group = parser.add_argument_group("scoring config (overrides --config)")
    group.add_argument("--config", help="YAML file with the same keys as the config model")
    for path, field, kinds in _leaves(config_cls):
        group.add_argument(_flag(path, field), dest="cfg__" + "__".join(path), default=argparse.SUPPRESS,
                           help=_help(field, kinds), **_arg_spec(field.annotation))


def _expanded(value: Any, annotation: Any) -> Optional[dict[str, Any]]:
    """A section given in YAML as something other than a mapping, as the mapping its validator makes of it."""
    if value is None:
        return {}
    try:
        parsed = TypeAdapter(annotation).validate_python(value)
    except ValidationError:
        return None  # left as it is: the final validation names the key
    return parsed.model_dump(exclude_unset=True) if isinstance(parsed, BaseModel) else None


def _set(data: dict[str, Any], path: Path, value: Any, model_cls: type[BaseModel]) -> None:
    node, cls = data, model_cls
    for key in path[:-1]:
        child = node.get(key)
        field = cls.model_fields.get(key) if cls is not None else None
        annotation = field.annotation if field is not None else None
        if not isinstance(child, dict):
            # With its validators (the shorthand expansion lives in the field's metadata).
            child = _expanded(child, field.rebuild_annotation()) if field is not None else {}
            if child is None:
                return
            node[key] = child
        members = _members(annotation)
        cls = members[0] if len(members) == 1 else None  # type: ignore[assignment]
        node = child
    node[path[-1]] = value


def config_from_args(args: argparse.Namespace, config_cls: type[BaseModel] = RMConfig) -> Any:
    """YAML (--config), then the flags that were given, validated once."""
    data: dict[str, Any] = load_yaml_mapping(args.config) if getattr(args, "config", None) else {}
    for dest, value in vars(args).items():
        if dest.startswith("cfg__"):
            _set(data, tuple(dest[len("cfg__"):].split("__")), value, config_cls)
    return config_cls.model_validate(data)
