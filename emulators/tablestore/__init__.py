"""Tablestore emulator: the real `tablestore` SDK talks to it over 127.0.0.1.

It speaks the service's wire protocol (protobuf messages, PlainBuffer rows, signed requests and
answers) and keeps tables in memory, optionally saved to a JSON file. Run it on its own with
`python -m emulators tablestore [--port N]`, or in-process:

    with TablestoreEmulator(access_key_id="test-ak", access_key_secret="test-secret") as emu:
        client = OTSClient(emu.endpoint, "test-ak", "test-secret", "dwnotify")
"""

from __future__ import annotations

import argparse

from emulators._base import serve
from emulators.tablestore.server import TablestoreEmulator

__all__ = ["TablestoreEmulator", "main"]


def main(argv: list[str]) -> int:
    """Command line: print the endpoint as the first stdout line, serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m emulators tablestore", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--access-key-id", default="test-ak")
    parser.add_argument("--access-key-secret", default="test-secret")
    parser.add_argument("--instance", default="dwnotify")
    parser.add_argument("--sts-token", default=None, help="if set, the only security token accepted")
    parser.add_argument("--persist", metavar="PATH", default=None, help="JSON file to load from and save to")
    args = parser.parse_args(argv)

    emulator = TablestoreEmulator(
        args.access_key_id, args.access_key_secret, args.instance, args.persist, sts_token=args.sts_token
    )
    return serve(emulator, args.host, args.port)
