"""The subcommands of the ``klantreis`` command, registered where they are written.

Add one by decorating a handler ``(args) -> exit code`` with :func:`command`; pass ``arguments=`` a function
that adds its options to the subparser. :data:`COMMANDS` holds them all; ``deploy.cli`` builds the parser from
it. This module imports nothing of ``deploy``, so the modules that register commands (``deploy.cli``,
``deploy.deadletters``, ``deploy.journey_cli``) depend on it and not on each other.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

Handler = Callable[[argparse.Namespace], int]
AddArguments = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    help: str
    handler: Handler
    arguments: AddArguments | None = None


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, arguments: AddArguments | None = None) -> Callable[[Handler], Handler]:
    """Register ``handler`` as the subcommand ``name`` (a later registration replaces an earlier one)."""

    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(help=help, handler=handler, arguments=arguments)
        return handler

    return register


def say(message: str) -> None:
    print(message, flush=True)
