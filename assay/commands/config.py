"""``assay config show``: the settings a service would run with, secrets redacted."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cmd_config_show(args: argparse.Namespace) -> int:
    from assay.arguments import CommandError
    from protocol.config import ROLES, ConfigError, effective, load, read_toml, role_of, to_toml

    try:
        role = args.role or (role_of(read_toml(args.config), args.config) if args.config else None)
        if role is None:
            raise ConfigError("give --config FILE or --role ROLE")
        config = load(ROLES[role], args.config)
    except ConfigError as exc:
        raise CommandError(str(exc)) from exc
    print(to_toml(role, effective(config)), end="")
    return 0


def register(commands: Any) -> None:
    from protocol.config import ROLES

    config = commands.add_parser("config", help="service configuration")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show", help="print the effective settings (file < ASSAY_* environment), redacted"
    )
    show.add_argument("--config", type=Path, default=None, help="TOML config file")
    show.add_argument("--role", choices=sorted(ROLES), default=None,
                      help="role whose settings to show (default: the file's table)")
    show.set_defaults(func=cmd_config_show)
