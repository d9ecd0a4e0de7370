"""Flags generated from a config dataclass, so that a setting has one name, one default and one help text from the
command line to the checkpoint.

Each field gives ``--field-name`` (``_`` -> ``-``; ``metadata["flag"]`` where the flag keeps an older spelling), its
default, and its help from ``metadata["help"]`` (plus ``choices`` and ``metavar``). A ``bool`` field that defaults to
True becomes ``--no-field-name``, one that defaults to False ``--field-name``; a ``dict`` field a repeatable
``KEY=VALUE``; ``X | None`` takes an ``X``. :func:`dataclass_from_args` builds the dataclass back from the parsed
arguments. A field without help must be named in ``skip`` (the command line does not offer it, or a common flag of
the same dest does).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

from imagine_ros.cli._common import env_option


def _value_type(hint: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def add_dataclass_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *, skip: typing.Iterable[str] = ()
) -> None:
    """Add one flag per field of the dataclass ``cls`` to ``parser``, except the fields in ``skip``."""
    skip = set(skip)
    names = {f.name for f in dataclasses.fields(cls)}
    if skip - names:
        raise ValueError(f"{cls.__name__} has no fields {sorted(skip - names)}")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        meta = dict(f.metadata)
        if "help" not in meta:
            raise ValueError(f"{cls.__name__}.{f.name} has no metadata help: give it one, or skip the field")
        help_text = meta["help"]
        kind = _value_type(hints[f.name])
        dashed = f.name.replace("_", "-")
        if f.default is not dataclasses.MISSING:
            default, required = f.default, False
        elif f.default_factory is not dataclasses.MISSING:
            default, required = f.default_factory(), False
        else:
            default, required = None, True
        if kind is bool:
            if default:
                parser.add_argument(
                    meta.get("flag", f"--no-{dashed}"),
                    dest=f"no_{f.name}",
                    action="store_true",
                    help=f"no {help_text}",
                )
            else:
                parser.add_argument(meta.get("flag", f"--{dashed}"), dest=f.name, action="store_true", help=help_text)
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "help": help_text, "required": required}
        if "metavar" in meta or (
            "flag" in meta and "choices" not in meta
        ):  # shown with the flag's name, not the field's
            kwargs["metavar"] = meta.get("metavar", meta.get("flag", "")[2:].upper().replace("-", "_"))
        if "choices" in meta:
            kwargs["choices"] = tuple(meta["choices"])
        if typing.get_origin(kind) is dict or kind is dict:
            kwargs.update(type=env_option, action="append", default=[])
        elif kind in (int, float, str):
            kwargs.update(type=kind, default=default)
            if default is not None and "default" not in help_text:
                kwargs["help"] = f"{help_text} (default %(default)s)"
        else:
            raise ValueError(f"{cls.__name__}.{f.name}: no flag for a field of type {kind}; skip it")
        parser.add_argument(meta.get("flag", f"--{dashed}"), **kwargs)


def dataclass_from_args(cls: type, args: argparse.Namespace, **values: Any) -> Any:
    """``cls(...)`` from the parsed ``args``: each field from the dest of its flag (``no_NAME`` for a ``--no-NAME``
    flag, a dict from ``KEY=VALUE`` pairs); ``values`` win over ``args``; fields without a flag keep their default."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind = _value_type(hints[f.name])
        if f.name in values:
            kwargs[f.name] = values[f.name]
        elif kind is bool and hasattr(args, f"no_{f.name}"):
            kwargs[f.name] = not getattr(args, f"no_{f.name}")
        elif hasattr(args, f.name):
            value = getattr(args, f.name)
            kwargs[f.name] = dict(value) if typing.get_origin(kind) is dict or kind is dict else value
    return cls(**kwargs)
