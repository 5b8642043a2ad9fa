"""MkDocs hook: the pages generated from the code itself, so that none can go stale.

A page holding one of the markers below gets it replaced at build time:

* ``<!-- generated: cli -->``: every command's ``--help``, from the argparse parsers
  :func:`largemeta.cli.build_parser` builds (walked recursively through the sub-commands);
* ``<!-- generated: config -->``: every config key with its type, default and docstring, from
  :func:`largemeta.train.config_docs.keys` (which reads :class:`largemeta.train.config.TrainConfig`);
* ``<!-- generated: api -->``: one mkdocstrings entry per public name: ``largemeta.__all__`` and the
  ``__all__`` of every public subpackage and top-level module (found by walking the package, not listed).

Before the build, every public name must have a docstring (read statically by griffe, as mkdocstrings
renders it): an undocumented one fails the build, naming it.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pkgutil
from pathlib import Path

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[2]
HELP_WIDTH = "100"


# ------------------------------------------------------------------------------------------ public names


def public_modules() -> list[str]:
    """``largemeta``, every subpackage (any depth) and every top-level module that defines ``__all__``; a
    name with a leading underscore on its path is private."""
    import largemeta

    found = ["largemeta"]
    for info in pkgutil.walk_packages(largemeta.__path__, "largemeta."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts) or (not info.ispkg and len(parts) > 2):
            continue
        if hasattr(importlib.import_module(info.name), "__all__"):
            found.append(info.name)
    return found


def public_names() -> list[tuple[str, str, str]]:
    """``(module, name, target)`` for every public name: ``target`` is where the object is defined (a class
    or function re-exported by a package is documented at its definition), else ``module.name``."""
    rows = []
    for modname in public_modules():
        module = importlib.import_module(modname)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                target = obj.__name__
            elif (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__.startswith("largemeta"):
                target = f"{obj.__module__}.{obj.__qualname__}"
            else:
                target = f"{modname}.{name}"
            rows.append((modname, name, target))
    return rows


def undocumented(rows: list[tuple[str, str, str]]) -> list[str]:
    """The public names whose object has no docstring, as griffe (and so the API page) sees them."""
    import griffe

    package = griffe.load("largemeta", search_paths=[str(ROOT / "src")], resolve_aliases=True)
    missing = []
    for modname, name, target in rows:
        try:
            path = target.removeprefix("largemeta").removeprefix(".")
            obj = package[path] if path else package
            if obj.is_alias:
                obj = obj.final_target
        except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            missing.append(f"{modname}.{name} (griffe cannot find {target})")
            continue
        if obj.docstring is None or not obj.docstring.value.strip():
            missing.append(f"{modname}.{name}")
    return missing


def api_markdown() -> str:
    out = []
    rows = public_names()
    for modname in dict.fromkeys(m for m, _, _ in rows):
        out.append(f"## `{modname}`\n")
        summary = (inspect.getdoc(importlib.import_module(modname)) or "").split("\n\n")[0]
        if summary:
            out.append(summary.replace("\n", " ") + "\n")
        for m, name, target in rows:
            if m != modname:
                continue
            options = ["    options:", "      heading_level: 3"]
            if inspect.ismodule(getattr(importlib.import_module(modname), name)):
                options.append("      members: false")
            out.append(f"::: {target}\n" + "\n".join(options) + "\n")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ the CLI


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return []


def cli_markdown() -> str:
    os.environ["COLUMNS"] = HELP_WIDTH  # argparse wraps to the terminal: the page is the same everywhere
    from largemeta.cli import build_parser

    parser = build_parser()
    table = ["| command | what it does |", "|---|---|"]
    sections = []

    def walk(p: argparse.ArgumentParser, depth: int) -> None:
        sections.append(f"{'#' * min(depth + 1, 4)} `{p.prog}`\n\n```text\n{p.format_help().rstrip()}\n```\n")
        for _name, help_, sub in _subcommands(p):
            if depth >= 1 or not _subcommands(sub):
                table.append(f"| [`{sub.prog}`](#{_anchor(sub.prog)}) | {help_.replace('|', '&#124;')} |")
            walk(sub, depth + 1)

    walk(parser, 1)
    return "\n".join(table) + "\n\n" + "\n".join(sections)


def _anchor(prog: str) -> str:
    return prog.replace(" ", "-")


# ------------------------------------------------------------------------------------------ config keys


def config_markdown() -> str:
    from largemeta.train.config_docs import keys, toml_value

    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for k in keys():
        doc = k.doc.replace("|", "&#124;")
        default = toml_value(k.default).replace("|", "&#124;")
        rows.append(f"| `{k.name}` | `{k.type}` | `{default}` | {doc} |")
    return "\n".join(rows) + "\n"


MARKERS = {
    "<!-- generated: cli -->": cli_markdown,
    "<!-- generated: config -->": config_markdown,
    "<!-- generated: api -->": api_markdown,
}


def on_pre_build(config) -> None:
    missing = undocumented(public_names())
    if missing:
        raise PluginError(f"{len(missing)} public names have no docstring: {', '.join(missing)}")


def on_page_markdown(markdown: str, page, config, files) -> str:
    for marker, make in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown
