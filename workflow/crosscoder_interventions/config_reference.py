"""docs/configuration.md, rendered from the config schema and config.yaml: every key by section, what it
takes, its default and what it does. The schema is the one place a key's type, bounds, default and
description are written, so this page is generated, never edited (a test checks it is up to date):

    .venv/bin/python -m crosscoder_interventions.config_reference > docs/configuration.md
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPOSITORY = Path(__file__).resolve().parents[2]
SCHEMA = REPOSITORY / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPOSITORY / "config.yaml"

PREAMBLE = """# Configuration

For anyone writing a config: every key the workflow reads, by section. `config.yaml` is the default
configuration (the embedded world, end to end); a file given with `--configfile` is merged over it key by
key, and `--config key=value` over both. Every key is checked at start-up against
[the schema](../workflow/schemas/config.schema.yaml), which states each key's type, bounds, default and
meaning; this page is generated from it and from `config.yaml`
(`.venv/bin/python -m crosscoder_interventions.config_reference > docs/configuration.md`), so it cannot
disagree with them. A default marked *schema* is filled in when a config leaves the key out; one marked
*config.yaml* is the value the default configuration sets (the key is required, so a config of your own
merged over `config.yaml` inherits it). What the methods and metrics mean is in [design.md](design.md);
which worlds there are, in [worlds.md](worlds.md).
"""


def _resolve(node: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A schema node with its $ref followed (the node's own keys win, as JSON Schema 2020-12 has it)."""
    while "$ref" in node:
        target = schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{key: value for key, value in node.items() if key != "$ref"}}
    return node


def _kind(node: dict[str, Any], schema: dict[str, Any]) -> str:
    """What a key takes, in a few words: its type and bounds, or its alternatives."""
    node = _resolve(node, schema)
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return " or ".join(f"`{json.dumps(value)}`" for value in node["enum"])
    if "oneOf" in node:
        return " or ".join(_kind(option, schema) for option in node["oneOf"])
    kinds = node.get("type", "any")
    kind = " or ".join(kinds) if isinstance(kinds, list) else kinds
    bounds = [f"{symbol} {node[key]}" for key, symbol in
              (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")) if key in node]
    if kind == "array" and "items" in node:
        kind = f"list of {_kind(node['items'], schema)}"
    if "pattern" in node:
        bounds.append(f"matching `{node['pattern']}`")
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _rows(properties: dict[str, Any], schema: dict[str, Any], given: Any, prefix: str) -> Iterator[tuple[str, str, str, str]]:
    """(key, kind, default, description) for every key under `properties`, depth first; a nested mapping
    gets its own row, then its keys'."""
    for name, raw in properties.items():
        node = _resolve(raw, schema)
        key = f"{prefix}{name}"
        if "default" in node:
            default = f"`{json.dumps(node['default'])}` (schema)"
        elif isinstance(given, dict) and name in given and not isinstance(given[name], dict):
            default = f"`{json.dumps(given[name])}` (config.yaml)"
        else:
            default = ""
        yield key, _kind(node, schema), default, node.get("description", "")
        if "properties" in node:
            yield from _rows(node["properties"], schema, given.get(name) if isinstance(given, dict) else None, f"{key}.")


def render(schema: dict[str, Any], default_config: dict[str, Any]) -> str:
    """The page: general keys first, then one section per top-level mapping, in the schema's order."""
    properties = schema["properties"]
    sections = [name for name, node in properties.items() if "properties" in _resolve(node, schema)]
    general = {name: node for name, node in properties.items() if name not in sections}
    lines = [PREAMBLE]
    for title, scope, prefix in [("General", general, ""), *((f"`{name}`", _resolve(properties[name], schema)["properties"], f"{name}.")
                                                                for name in sections)]:
        section = title.strip("`")
        given = default_config if section == "General" else default_config.get(section)
        lines += [f"## {title}", ""]
        if section != "General" and properties[section].get("description"):
            lines += [_cell(properties[section]["description"]), ""]
        lines += ["| key | takes | default | what it does |", "|---|---|---|---|"]
        lines += [f"| `{key}` | {_cell(kind)} | {_cell(default)} | {_cell(description)} |" for key, kind, default, description in
                  _rows(scope, schema, given, prefix)]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    schema = yaml.safe_load(SCHEMA.read_text())
    sys.stdout.write(render(schema, yaml.safe_load(DEFAULT_CONFIG.read_text())))


if __name__ == "__main__":
    main()
