"""One source for the config: the settings dataclasses and the registry generate parts of the schema.

The config schema (``schemas/config.schema.yaml``, package data, read by
:func:`poisoncert.config.validate_config`) is a committed file, so any JSON-schema validator
(Snakemake's ``validate`` included) reads it as it is. Its parts that restate code are generated
here and spliced between marker comments, leaving every other line as written:

* ``# generated: <section>`` ... ``# end generated``: the ``properties`` of a settings block, from
  a frozen dataclass whose fields carry their doc and bounds (:func:`param`);
  :data:`SECTIONS` names the dataclass of each block (defaults from an instance, so nested
  blocks keep their own defaults, e.g. the ``linear`` head's);
* ``enum: [...]  # generated: <name>``: an allowed-values list, from the registry
  (:data:`ENUMS`).

``python -m poisoncert.schema --write`` regenerates the file; ``tests/test_schema.py`` checks
that the committed file equals its regeneration. :func:`describe` renders the config reference
(Markdown) from the schema: ``poisoncert check-config --describe``, committed as
``docs/config.md`` (checked by the same test).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import sys
import typing
from typing import Any, Callable

import yaml

#: Metadata keys of :func:`param` -> JSON-schema keywords.
_BOUNDS = {"minimum": "minimum", "maximum": "maximum", "exclusive_minimum": "exclusiveMinimum",
           "exclusive_maximum": "exclusiveMaximum"}


def param(default: Any = dataclasses.MISSING, doc: str = "", *, default_factory: Any = dataclasses.MISSING,
          enum: tuple[str, ...] | Callable[[], Any] | None = None, item_minimum: int | None = None,
          item_maximum: int | None = None, in_schema: bool = True, **bounds: Any) -> Any:
    """A dataclass field with its config documentation: ``doc``, bounds, allowed values.

    ``bounds``: ``minimum``, ``maximum``, ``exclusive_minimum``, ``exclusive_maximum`` (JSON
    schema's); ``enum``: the allowed values (or a function returning them, for a registry that
    imports this module); ``item_minimum``, ``item_maximum``: the bounds of each item of a tuple field;
    ``in_schema=False``: a field the config does not set (it comes from elsewhere).

    >>> @dataclasses.dataclass(frozen=True)
    ... class Demo:
    ...     epochs: int = param(3, "Passes over the data.", minimum=1)
    >>> Demo().epochs, object_properties(Demo)["epochs"]
    (3, {'type': 'integer', 'minimum': 1, 'default': 3, 'description': 'Passes over the data.'})
    """
    unknown = set(bounds) - set(_BOUNDS)
    if unknown:
        raise TypeError(f"param: unknown bound(s) {sorted(unknown)}; use {', '.join(_BOUNDS)}")
    metadata = {"doc": doc, "enum": enum, "item_minimum": item_minimum, "item_maximum": item_maximum, "in_schema": in_schema, **bounds}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.metadata.get("in_schema", True)}
    return value


def _json_type(hint: Any) -> tuple[str, Any]:
    """JSON-schema type of an annotation: ('integer' | 'number' | 'boolean' | 'string', None),
    ('array', item type) for ``tuple[X, ...]``, ('object', class) for a dataclass."""
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if hint in simple:
        return simple[hint], None
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        return "array", simple[args[0]]
    if dataclasses.is_dataclass(hint):
        return "object", hint
    raise TypeError(f"no JSON-schema type for {hint!r}")


def object_properties(cls: type, instance: Any = None) -> dict[str, Any]:
    """The schema ``properties`` of a settings dataclass (defaults from ``instance``, else ``cls()``)."""
    instance = cls() if instance is None else instance
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("in_schema", True):
            continue
        if not meta.get("doc"):
            raise TypeError(f"{cls.__name__}.{f.name}: a config field needs its doc (poisoncert.schema.param)")
        kind, sub = _json_type(hints[f.name])
        value = getattr(instance, f.name)
        if kind == "object":
            out[f.name] = {"type": "object", "additionalProperties": False, "default": {}, "description": meta["doc"],
                           "properties": object_properties(sub, value)}
            continue
        prop: dict[str, Any] = {"type": kind}
        enum = meta.get("enum")
        if enum is not None:
            prop["enum"] = list(enum() if callable(enum) else enum)
        if kind == "array":
            item: dict[str, Any] = {"type": sub}
            if meta.get("item_minimum") is not None:
                item["minimum"] = meta["item_minimum"]
            if meta.get("item_maximum") is not None:
                item["maximum"] = meta["item_maximum"]
            prop["items"] = item
        for key, keyword in _BOUNDS.items():
            if meta.get(key) is not None:
                prop[keyword] = meta[key]
        prop["default"] = _plain(value)
        prop["description"] = meta["doc"]
        out[f.name] = prop
    return out


#: Generated settings blocks: marker name -> the dataclass (``module:Class``) whose fields are its properties.
SECTIONS: dict[str, str] = {
    "train": "poisoncert.train:TrainConfig",
    "extractor": "poisoncert.learners.extractors:ExtractorConfig",
    "head": "poisoncert.learners.heads:HeadConfig",
    "frozen": "poisoncert.learners.frozen:FrozenConfig",
}


def _registry_enum(table: str, keep: Callable[[Any], bool] = lambda record: True) -> Callable[[], list[str]]:
    def values() -> list[str]:
        from . import registry

        return [name for name, record in getattr(registry, table).items() if keep(record)]

    return values


def _trained_learners(record: Any) -> bool:
    """A learner a config may name: one that trains for some scheme (binary_kmeans's is implied)."""
    from . import registry

    return any(registry.SCHEMES[s].trains for s in record.schemes)


def _poisoning_models() -> list[str]:
    from .certify.selection import POISONING_MODELS

    return list(POISONING_MODELS)


#: Generated allowed-values lists: marker name -> function returning them.
ENUMS: dict[str, Callable[[], list[str]]] = {
    "datasets": _registry_enum("DATASETS"),
    "schemes": _registry_enum("SCHEMES"),
    "learners": _registry_enum("LEARNERS", _trained_learners),
    "certificates": _registry_enum("CERTIFICATES"),
    "poisoning_models": _poisoning_models,
}


def _section(name: str) -> dict[str, Any]:
    module, cls = SECTIONS[name].split(":")
    return object_properties(getattr(importlib.import_module(module), cls))


def _dump(properties: dict[str, Any], indent: int) -> list[str]:
    text = yaml.safe_dump(properties, sort_keys=False, default_flow_style=None, width=10**6, allow_unicode=True)
    return [" " * indent + line if line else line for line in text.splitlines()]


_BEGIN = re.compile(r"^(\s*)# generated: (\w+)\b.*$")
_END = re.compile(r"^\s*# end generated\s*$")
_ENUM = re.compile(r"^(\s*enum: )\[[^\]]*\](\s+# generated: (\w+))\s*$")


def render(text: str) -> str:
    """The schema text with every generated part regenerated (everything else unchanged)."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m_enum = _ENUM.match(line)
        m_begin = _BEGIN.match(line)
        if m_enum:
            values = ENUMS[m_enum.group(3)]()
            out.append(f"{m_enum.group(1)}[{', '.join(values)}]{m_enum.group(2)}")
        elif m_begin:
            indent, name = len(m_begin.group(1)), m_begin.group(2)
            if name not in SECTIONS:
                raise KeyError(f"schema marker '# generated: {name}': no such section (poisoncert.schema.SECTIONS)")
            out.append(line)
            j = i + 1
            while j < len(lines) and not _END.match(lines[j]):
                j += 1
            if j == len(lines):
                raise ValueError(f"schema marker '# generated: {name}' has no '# end generated'")
            out.extend(_dump(_section(name), indent))
            out.append(lines[j])
            i = j
        else:
            out.append(line)
        i += 1
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------- reference


def _type(prop: dict[str, Any]) -> str:
    t = prop.get("type", "")
    types = t if isinstance(t, list) else [t]
    if "$ref" in prop:
        return "object"
    names = []
    for typ in types:
        if typ == "array" and isinstance(prop.get("items"), dict) and prop["items"].get("type"):
            names.append(f"list of {prop['items']['type']}")
        elif typ:
            names.append(typ)
    return " or ".join(names)


def _allowed(prop: dict[str, Any]) -> str:
    parts = []
    enum = prop.get("enum") or (prop.get("items") or {}).get("enum")
    if enum:
        parts.append(", ".join(f"`{v}`" for v in enum))
    src = prop if "minimum" in prop or "maximum" in prop or "exclusiveMinimum" in prop or "exclusiveMaximum" in prop else prop.get("items") or {}
    lo = f">= {src['minimum']}" if "minimum" in src else (f"> {src['exclusiveMinimum']}" if "exclusiveMinimum" in src else "")
    hi = f"<= {src['maximum']}" if "maximum" in src else (f"< {src['exclusiveMaximum']}" if "exclusiveMaximum" in src else "")
    bound = ", ".join(b for b in (lo, hi) if b)
    if bound:
        parts.append(("each " if src is not prop else "") + bound)
    if prop.get("uniqueItems"):
        parts.append("no repeats")
    if prop.get("minItems"):
        parts.append(f"at least {prop['minItems']} item{'s' if prop['minItems'] > 1 else ''}")
    return "; ".join(parts)


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(prop: dict[str, Any], required: bool) -> str:
    if required:
        return "required"
    if "default" not in prop:
        return ""
    value = prop["default"]
    if isinstance(value, dict) and not value:
        return ""
    return "`" + yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip() + "`"


def _rows(props: dict[str, Any], prefix: str, schema: dict[str, Any], required: tuple[str, ...] = ()) -> list[str]:
    rows = []
    for name, prop in props.items():
        if "$ref" in prop:
            target = schema
            for part in prop["$ref"].lstrip("#/").split("/"):
                target = target[part]
            prop = {**target, **{k: v for k, v in prop.items() if k != "$ref"}}
        key = f"{prefix}{name}"
        rows.append(f"| `{key}` | {_type(prop)} | {_default(prop, name in required)} | {_cell(_allowed(prop))} | {_cell(prop.get('description', ''))} |")
        if prop.get("type") == "object" and "properties" in prop:
            rows.extend(_rows(prop["properties"], f"{key}.", schema, tuple(prop.get("required", ()))))
        if prop.get("type") == "object" and isinstance(prop.get("additionalProperties"), dict):
            sub = prop["additionalProperties"]
            if "$ref" in sub:
                target = schema
                for part in sub["$ref"].lstrip("#/").split("/"):
                    target = target[part]
                sub = target
            rows.extend(_rows(sub.get("properties", {}), f"{key}.<name>.", schema, tuple(sub.get("required", ()))))
    return rows


def describe(schema: dict[str, Any]) -> str:
    """The config reference as Markdown: one row per key (type, default, allowed values, meaning).

    >>> print(describe({"title": "T", "description": "D.", "properties": {"n": {"type": "integer", "minimum": 1,
    ...       "default": 2, "description": "How many."}}}))  # doctest: +NORMALIZE_WHITESPACE
    # Config reference
    <BLANKLINE>
    <!-- generated by `poisoncert check-config --describe` from the config schema: edit the schema or its dataclasses, not this page -->
    <BLANKLINE>
    T. D.
    <BLANKLINE>
    | key | type | default | allowed | meaning |
    |---|---|---|---|---|
    | `n` | integer | `2` | >= 1 | How many. |
    """
    head = [
        "# Config reference",
        "",
        "<!-- generated by `poisoncert check-config --describe` from the config schema: edit the schema or its dataclasses, not this page -->",
        "",
        _cell(f"{schema.get('title', '').rstrip('.')}. {schema.get('description', '')}"),
        "",
        "| key | type | default | allowed | meaning |",
        "|---|---|---|---|---|",
    ]
    return "\n".join(head + _rows(schema.get("properties", {}), "", schema, tuple(schema.get("required", ())))) + "\n"


def main(argv: list[str] | None = None) -> int:
    from .config import SCHEMA_PATH

    p = argparse.ArgumentParser(prog="python -m poisoncert.schema", description="regenerate the config schema's generated parts")
    p.add_argument("--write", action="store_true", help=f"rewrite {SCHEMA_PATH}; without it, exit 1 if it is out of date")
    args = p.parse_args(argv)
    text = SCHEMA_PATH.read_text(encoding="utf-8")
    new = render(text)
    if args.write:
        if new != text:
            SCHEMA_PATH.write_text(new, encoding="utf-8")
        return 0
    if new != text:
        print(f"{SCHEMA_PATH} is out of date: run python -m poisoncert.schema --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
