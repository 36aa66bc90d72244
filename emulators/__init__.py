"""Local stand-ins for the cloud services dwnotify talks to, speaking their real wire protocols.

They share no code with `dwnotify` (style rule 10): every signature and parsing check here is
written from the services' documentation. `python -m emulators <service>` runs one; in-process,
import the class (loaded lazily, so a DataWorks test does not pay for another service's imports):

    from emulators import DataWorksEmulator, DingTalkEmulator, SlackEmulator
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "DataWorksEmulator": "emulators.dataworks",
    "Scenario": "emulators.scenario",
    "DingTalkEmulator": "emulators.dingtalk",
    "SlackEmulator": "emulators.slack",
    "LarkEmulator": "emulators.lark",
    "WeComEmulator": "emulators.wecom",
    "GenericWebhookEmulator": "emulators.webhook",
    "FcEmulator": "emulators.fc",
}

__all__ = [
    "DataWorksEmulator",
    "DingTalkEmulator",
    "FcEmulator",
    "GenericWebhookEmulator",
    "LarkEmulator",
    "Scenario",
    "SlackEmulator",
    "WeComEmulator",
]


def __getattr__(name: str) -> Any:
    """Import an emulator class on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'emulators' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
