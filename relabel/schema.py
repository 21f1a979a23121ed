"""A closed, typed schema for the sections of a workflow file, written once as dataclasses.

Each section is a dataclass whose fields are made with :func:`setting`: the field's
annotation is its type, :func:`setting` gives its default, range and one line of
meaning. :func:`parse_section` checks a parsed YAML mapping against it (unknown keys
are refused with the nearest valid one suggested; types and ranges are checked) and
:func:`schema_markdown` prints the same definitions as the table in
``docs/conventions.md``, so the documentation and the checks cannot drift apart.

Adding a key is one line in its section's dataclass, e.g.::

    augment: Optional[str] = setting(None, "augmentation of the training cutouts", choices=("degrade",))
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

from relabel.errors import ConfigError


def setting(default: Any, doc: str, *, key: str | None = None, minimum: float | None = None,
            above: float | None = None, maximum: float | None = None, choices: tuple | None = None):
    """A dataclass field of a workflow section.

    Parameters
    ----------
    default : object
        Value when the key is absent (lists and mappings are copied per instance).
    doc : str
        One line of meaning, printed in ``docs/conventions.md``.
    key : str, optional
        The YAML key when it is not a Python name (``lambda``).
    minimum, above, maximum : float, optional
        Inclusive lower bound, exclusive lower bound, inclusive upper bound of a number.
    choices : tuple, optional
        The only values allowed (for strings).
    """
    meta = {"doc": doc, "key": key, "minimum": minimum, "above": above, "maximum": maximum, "choices": choices}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


#: The ``default`` of a key that must be given.
REQUIRED = dataclasses.MISSING


def section_keys(cls) -> dict[str, dataclasses.Field]:
    """YAML key -> field of a section dataclass, in definition order."""
    return {f.metadata.get("key") or f.name: f for f in dataclasses.fields(cls)}


def defaults(cls) -> dict[str, Any]:
    """The section's defaults as a plain mapping keyed like the YAML (nested sections included)."""
    return as_mapping(cls())


def as_mapping(obj) -> dict[str, Any]:
    """A section instance as a mapping keyed like the YAML.

    Parameters
    ----------
    obj : dataclass instance
        A section (e.g. ``Workflow().bias``).

    Returns
    -------
    dict of str to Any
        Deep copies of the values; nested sections as mappings.
    """
    out = {}
    for key, f in section_keys(type(obj)).items():
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            value = as_mapping(value)
        elif isinstance(value, list):
            value = [as_mapping(v) if dataclasses.is_dataclass(v) else copy.deepcopy(v) for v in value]
        out[key] = copy.deepcopy(value)
    return out


def reject_unknown(value: dict, known, where: str, path: str) -> None:
    """Refuse keys of ``value`` not in ``known``, suggesting the nearest valid one.

    Parameters
    ----------
    value : dict
        The mapping read from YAML.
    known : collection of str
        The valid keys.
    where : str
        The file, for messages.
    path : str
        Dotted key of the section (``""`` at the top).

    Raises
    ------
    ConfigError
        ``where: unknown key 'train.lamda' (did you mean 'train.lambda'?); known here: ...``
    """
    known = list(known)
    for key in value:
        if key in known:
            continue
        full = f"{path}.{key}" if path else str(key)
        near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.45)
        hint = f" (did you mean '{f'{path}.' if path else ''}{near[0]}'?)" if near else ""
        raise ConfigError(f"{where}: unknown key '{full}'{hint}; known here: {', '.join(known)}")


def parse_section(cls, value: Any, where: str, path: str):
    """Check a section mapping against its dataclass and return an instance.

    Parameters
    ----------
    cls : type
        A dataclass whose fields are made with :func:`setting`.
    value : dict or None
        The parsed YAML mapping (None: every default).
    where : str
        The file (or origin) named in error messages.
    path : str
        The section's dotted key (``train``, ``cluster.slurm``).

    Raises
    ------
    ConfigError
        Unknown key (with the nearest valid one), wrong type or value out of range; the
        message names the file and the dotted key.
    """
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: key '{path}' must be a mapping, got {value!r}")
    keys = section_keys(cls)
    reject_unknown(value, keys, where, path)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, f in keys.items():
        full = f"{path}.{key}" if path else key
        if key in value:
            kwargs[f.name] = check_value(value[key], hints[f.name], f.metadata, where, full)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: key '{full}' is missing ({f.metadata.get('doc', '')})")
    return cls(**kwargs)


def check_value(value: Any, tp, meta, where: str, path: str):
    """``value`` converted to ``tp`` (int stays int, int -> float, str -> Path), or a ConfigError.

    Parameters
    ----------
    value : Any
        As read from YAML.
    tp : type
        The key's annotated type.
    meta : mapping
        The field's metadata (``minimum``, ``above``, ``maximum``, ``choices``).
    where : str
        The file, for messages.
    path : str
        The dotted key.

    Returns
    -------
    Any
        ``value`` as ``tp``.

    Raises
    ------
    ConfigError
        Wrong type, value out of range or not among the choices; naming the file and the key.
    """
    try:
        out = _convert(value, tp, where, path)
    except _Mismatch:
        raise ConfigError(f"{where}: key '{path}' must be {type_name(tp)}, got {value!r}") from None
    _check_range(out, meta, where, path, tp)
    return out


class _Mismatch(Exception):
    pass


def _convert(value: Any, tp, where: str, path: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return parse_section(tp, value, where, path)
    if origin in (typing.Union, types.UnionType):
        for arg in sorted(args, key=lambda a: a is not type(None) and a is not bool):  # None, bool first
            try:
                return _convert(value, arg, where, path)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is typing.Literal:
        if value in args:
            return value
        raise _Mismatch
    if origin is list:
        if isinstance(value, str) and args and args[0] is str:
            value = [value]  # a single column name where a list goes
        if not isinstance(value, list):
            raise _Mismatch
        return [_convert(v, args[0], where, f"{path}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return {_convert(k, args[0], where, path): _convert(v, args[1], where, f"{path}.{k}") for k, v in value.items()}
    return _convert_scalar(value, tp)


def _convert_scalar(value: Any, tp):
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str) and value:
            return value
    elif tp is Path:
        if isinstance(value, str) and value:
            return Path(value)
    elif tp is Any:
        return value
    raise _Mismatch


def _check_range(value: Any, meta, where: str, path: str, tp) -> None:
    choices = meta.get("choices")
    if choices and value is not None and value not in choices:
        near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"{where}: key '{path}' must be one of {', '.join(map(str, choices))}, got {value!r}{hint}")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    lo, above, hi = meta.get("minimum"), meta.get("above"), meta.get("maximum")
    if (lo is not None and value < lo) or (above is not None and value <= above) or (hi is not None and value > hi):
        raise ConfigError(f"{where}: key '{path}' must be {type_name(tp)} {range_text(meta)}, got {value!r}")


def range_text(meta) -> str:
    """The allowed range of a number as words: ``>= 0``, ``> 0 and <= 1``.

    Parameters
    ----------
    meta : mapping
        A field's metadata (``minimum``, ``above``, ``maximum``).

    Returns
    -------
    str
        Empty when the number is unbounded.
    """
    parts = []
    if meta.get("minimum") is not None:
        parts.append(f">= {meta['minimum']:g}")
    if meta.get("above") is not None:
        parts.append(f"> {meta['above']:g}")
    if meta.get("maximum") is not None:
        parts.append(f"<= {meta['maximum']:g}")
    if meta.get("choices"):
        parts.append("one of " + ", ".join(map(str, meta["choices"])))
    return " and ".join(parts)


def type_name(tp) -> str:
    """A type in a user's words: ``a positive integer`` is range + ``an integer``.

    Parameters
    ----------
    tp : type
        An annotated type (``int``, ``float | None``, ``list[str]``, a section).

    Returns
    -------
    str
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {type_name(args[0]).split(' ', 1)[1]}s" if args else "a list"
    if origin is dict:
        return f"a mapping of {type_name(args[0]).split(' ', 1)[1]} to {type_name(args[1]).split(' ', 1)[1]}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path",
            type(None): "null", Any: "any value"}.get(tp, getattr(tp, "__name__", str(tp)))


def schema_rows(cls, path: str) -> list[tuple[str, str, str, str]]:
    """(key, type and range, default, meaning) for every key of a section, nested sections expanded.

    A section type met again among siblings (the job queues) is expanded once and referred to after.

    Parameters
    ----------
    cls : type
        A section dataclass.
    path : str
        Its dotted key, prefixed to every row's key.

    Returns
    -------
    list of tuple of str
    """
    rows = []
    hints = typing.get_type_hints(cls)
    seen: dict[Any, str] = {}  # dataclass type -> the key where it was first listed
    for key, f in section_keys(cls).items():
        tp = hints[f.name]
        full = f"{path}.{key}" if path else key
        if dataclasses.is_dataclass(tp) and tp in seen:
            rows.append((full, "a mapping", "", f"{f.metadata['doc']}: the keys of `{seen[tp]}`"))
            continue
        if dataclasses.is_dataclass(tp):
            seen[tp] = full
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
        if dataclasses.is_dataclass(tp) or dataclasses.is_dataclass(item):
            rows.append((full, type_name(tp), "", f.metadata["doc"]))
            rows += schema_rows(tp, full) if item is None else schema_rows(item, f"{full}[]")
            continue
        kind = type_name(tp)
        limits = range_text(f.metadata)
        if f.default is not dataclasses.MISSING:
            default = _yaml_text(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = _yaml_text(f.default_factory())
        else:
            default = "required"
        rows.append((full, f"{kind}{f' ({limits})' if limits else ''}", default, f.metadata["doc"]))
    return rows


def _yaml_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path):
        return str(value)
    return str(value) if not isinstance(value, str) else value


def schema_markdown(sections: dict[str, type]) -> str:
    """A Markdown table of every key of ``sections`` (section name -> dataclass).

    Parameters
    ----------
    sections : dict of str to type
        Section name -> its dataclass.

    Returns
    -------
    str
    """
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, cls in sections.items():
        for key, kind, default, doc in schema_rows(cls, name):
            shown = "" if not default else default if default == "required" else f"`{default}`"
            lines.append(f"| `{key}` | {kind} | {shown} | {doc} |")
    return "\n".join(lines) + "\n"
