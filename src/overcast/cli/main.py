"""The ``overcast`` command. Each command group lives in its own module and registers itself here.

Start-up matters (``overcast optimize`` in a fresh process should take well under a second, Python
included), so a command's module is imported, and its Typer signature built, only when that command
runs or ``--help`` lists it; command modules import their heavy dependencies inside the command bodies.
"""

from __future__ import annotations

import importlib

import typer
import typer.main
from typer.core import TyperGroup

# command -> module that adds it to an app through ``register(app)`` (tests check that they agree)
COMMANDS = {
    "gpus": "overcast.cli.gpus",
    "optimize": "overcast.cli.optimize",
    **dict.fromkeys(("launch", "status", "logs", "cancel", "events", "pools", "chaos"), "overcast.cli.jobs"),
    "up": "overcast.cli.server",
    "demo": "overcast.cli.server",
    "twin": "overcast.cli.twin",
    "serve": "overcast.cli.serve",
    "services": "overcast.cli.services",
    "usage": "overcast.cli.usage",
    "budget": "overcast.cli.budget",
}


class LazyCommands(TyperGroup):
    """A command group that imports a command's module the first time the command is looked up."""

    def list_commands(self, ctx):
        return [*(n for n in self.commands if n not in COMMANDS), *COMMANDS]

    def get_command(self, ctx, cmd_name):
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands.update(_load(COMMANDS[cmd_name]))
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in COMMANDS:
            for name in COMMANDS:  # a typo: load every command so "Did you mean ...?" can name any
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


def _load(module: str) -> dict:
    """The click commands a module registers, by name."""
    group = typer.Typer()
    group.callback()(_root)  # with a callback Typer makes a group even for a single command
    importlib.import_module(module).register(group)
    return dict(typer.main.get_command(group).commands)


app = typer.Typer(
    cls=LazyCommands,
    name="overcast",
    help="Many GPU providers as one pool of AI compute.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Many GPU providers as one pool of AI compute."""


@app.command()
def version() -> None:
    """Print overcast's version."""
    from overcast import __version__

    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
