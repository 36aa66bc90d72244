"""`python -m emulators <service> [options]`: run one stand-in on loopback until SIGTERM/SIGINT.

The first stdout line is the base URL. Each service is a `main(argv) -> int` entry point imported
only when chosen; adding a service is one line in SERVICES.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from importlib import import_module

SERVICES: dict[str, str] = {
    "dataworks": "emulators.dataworks:main",
    "dingtalk": "emulators.dingtalk:main_dingtalk",
    "slack": "emulators.slack:main_slack",
    "lark": "emulators.lark:main_lark",
    "wecom": "emulators.wecom:main_wecom",
    "webhook": "emulators.webhook:main_webhook",
    "tablestore": "emulators.tablestore:main",
    "fc": "emulators.fc:main",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the chosen service's entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in SERVICES:
        print(
            f"usage: python -m emulators {{{','.join(SERVICES)}}} [--port N] [options]\n"
            "       python -m emulators <service> --help   shows a service's options",
            file=sys.stderr,
        )
        return 0 if args and args[0] in ("-h", "--help") else 2
    module, _, function = SERVICES[args[0]].partition(":")
    entry: Callable[[Sequence[str]], int] = getattr(import_module(module), function)
    return entry(args[1:])


if __name__ == "__main__":
    sys.exit(main())
