"""``largemeta config keys`` and ``largemeta config show``: the config you can see."""

from __future__ import annotations

import argparse

from largemeta.cli.common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "config",
        help="every config key with its meaning (keys), or a resolved config (show)",
        description="The training config: its keys, and the config a --config and --set flags resolve to.",
    )
    cmds = c.add_subparsers(dest="config_command", metavar="SUBCOMMAND", parser_class=type(c))
    cmds.required = True
    k = cmds.add_parser("keys", help="every config key: type, default and meaning")
    k.add_argument("--json", action="store_true", help="print JSON (with the whole docstring of each key)")
    k.set_defaults(func=run_keys)
    s = cmds.add_parser("show", help="the resolved config of --config and --set, as TOML (a valid --config)")
    s.add_argument(
        "--config",
        help="a TOML config file, or a shipped one by name (offline, paper, pool); default: defaults",
    )
    s.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a key (repeatable)"
    )
    s.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    s.set_defaults(func=run_show)


def run_keys(args: argparse.Namespace) -> int:
    from largemeta.train.config_docs import keys, toml_value

    rows = keys()
    if args.json:
        print_json([{"key": r.name, "type": r.type, "default": r.default, "doc": r.doc} for r in rows])
        return 0
    width = max(len(r.name) for r in rows)
    for r in rows:
        print(f"{r.name:<{width}}  {r.type:<16} default {toml_value(r.default):<8}  {r.summary}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from largemeta.cli.train import overrides
    from largemeta.train.config import load_config
    from largemeta.train.config_docs import to_toml

    cfg = load_config(args.config, overrides(args, flags=()))
    if args.json:
        print_json(cfg.to_dict())
    else:
        print(to_toml(cfg), end="")
    return 0
