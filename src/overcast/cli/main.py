"""The ``overcast`` command. Each command group lives in its own module and registers itself here.

Command modules import their heavy dependencies inside the command bodies, so that
``overcast optimize`` starts fast (Python start-up included, well under half a second).
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="overcast",
    help="Many GPU providers as one pool of AI compute.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# module -> registers its commands on ``app`` through ``register(app)``
COMMAND_MODULES = (
    "overcast.cli.gpus",  # overcast gpus
    "overcast.cli.optimize",  # overcast optimize
    "overcast.cli.jobs",  # overcast launch / status / logs / cancel / events / pools / chaos
    "overcast.cli.server",  # overcast up
    "overcast.cli.twin",  # overcast twin run
    "overcast.cli.serve",  # overcast serve
)


@app.callback()
def _root() -> None:
    """Many GPU providers as one pool of AI compute."""


@app.command()
def version() -> None:
    """Print overcast's version."""
    from overcast import __version__

    typer.echo(__version__)


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
