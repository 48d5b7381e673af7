"""Find keys that a pydantic schema would ignore.

Serve's config models (`ServeDeploySchema` and what it nests) accept unknown keys and drop them,
so a misspelled `autoscaling_config` field deploys without a word. This walks a mapping alongside
a model's fields, recursing through nested models, lists, dicts and Optionals, and returns the
dotted path of every key that no field (or alias) claims.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel


def _field_names(model: type[BaseModel]) -> dict[str, Any]:
    names: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        names[name] = field.annotation
        if field.alias:
            names[field.alias] = field.annotation
    return names


def unknown_keys(data: Any, annotation: Any, path: str = "") -> list[str]:
    """Dotted paths in `data` that `annotation` (a pydantic model or a type containing models) ignores."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return unknown_keys(data, args[0], path)
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        # Serve declares e.g. `Union[Dict, AutoscalingConfig]` and parses the dict into the model
        # later, dropping unknown keys then: so a mapping is checked against the model member.
        members = [a for a in args if a is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if isinstance(data, dict) and models:
            return unknown_keys(data, models[0], path)
        lists = [m for m in members if typing.get_origin(m) in (list, typing.List)]
        if isinstance(data, list) and lists:
            return unknown_keys(data, lists[0], path)
        return []
    if origin in (list, typing.List) and isinstance(data, list) and args:
        return [k for i, v in enumerate(data) for k in unknown_keys(v, args[0], f"{path}[{i}]")]
    if origin in (dict, typing.Dict) and isinstance(data, dict) and len(args) == 2:
        return [k for key, v in data.items() for k in unknown_keys(v, args[1], _join(path, key))]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(data, dict):
        fields = _field_names(annotation)
        out = []
        for key, value in data.items():
            if key not in fields:
                out.append(_join(path, key))
            else:
                out.extend(unknown_keys(value, fields[key], _join(path, key)))
        return out
    return []


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)
