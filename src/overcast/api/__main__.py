"""``python -m overcast.api``: create team tokens and run the API server (no control loop attached).

    python -m overcast.api create-team ml            # prints a new token for team "ml" (once)
    python -m overcast.api create-team ops --admin
    python -m overcast.api serve --port 8787

The database is OVERCAST_DATABASE_URL, else $OVERCAST_HOME/overcast.db. ``overcast up`` runs the
same app with the control loop attached.
"""

from __future__ import annotations

import argparse
import sys

from overcast.store import Store, StoreConfigError, StoreUnavailable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m overcast.api", description="overcast API server and tokens"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    team = sub.add_parser("create-team", help="create a team (or add a token to one) and print its new token")
    team.add_argument("name")
    team.add_argument("--admin", action="store_true", help="the token sees and manages every team's jobs")
    serve = sub.add_parser("serve", help="run the REST API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8787)
    serve.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)

    try:
        if args.command == "create-team":
            print(Store().create_team(args.name, admin=args.admin))
            return 0
        Store().close()  # fail fast (and migrate once) before uvicorn starts its workers
    except (StoreConfigError, StoreUnavailable, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import uvicorn

    uvicorn.run(
        "overcast.api.app:app_from_env", factory=True, host=args.host, port=args.port, workers=args.workers
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
