"""``python -m overcast.api``: create team tokens and run the API server (no control loop attached).

    python -m overcast.api create-team ml            # prints a new token for team "ml" (once)
    python -m overcast.api create-team ops --admin
    python -m overcast.api tokens ml                 # the ids and ages of team ml's tokens
    python -m overcast.api revoke-token 3f2a9c1e0b7d4a65 # or the whole oc_... token
    python -m overcast.api serve --port 8787

The database is OVERCAST_DATABASE_URL, else $OVERCAST_HOME/overcast.db. ``overcast up`` runs the
same app with the control loop attached.
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from overcast.store import Store, StoreConfigError, StoreUnavailable
from overcast.store.tokens import split_token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m overcast.api", description="overcast API server and tokens"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    team = sub.add_parser("create-team", help="create a team (or add a token to one) and print its new token")
    team.add_argument("name")
    team.add_argument("--admin", action="store_true", help="the token sees and manages every team's jobs")
    listing = sub.add_parser("tokens", help="list a team's token ids and when each was created")
    listing.add_argument("name")
    revoke = sub.add_parser("revoke-token", help="delete a token (give its id, or the whole token)")
    revoke.add_argument("token")
    serve = sub.add_parser("serve", help="run the REST API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8787)
    serve.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)

    try:
        if args.command == "create-team":
            print(Store().create_team(args.name, admin=args.admin))
            return 0
        if args.command == "tokens":
            return _tokens(Store(), args.name)
        if args.command == "revoke-token":
            return _revoke(Store(), args.token)
        Store().close()  # fail fast (and migrate once) before uvicorn starts its workers
    except (StoreConfigError, StoreUnavailable, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import uvicorn

    uvicorn.run(
        "overcast.api.app:app_from_env", factory=True, host=args.host, port=args.port, workers=args.workers
    )
    return 0


def _tokens(store: Store, team: str) -> int:
    if not store.has_team(team):
        print(f"error: no team {team!r}", file=sys.stderr)
        return 2
    for token_id, created in store.team_tokens(team):
        print(f"{token_id}  created {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(created))}")
    return 0


def _revoke(store: Store, given: str) -> int:
    from overcast.api.auth import CACHE_SECONDS

    given = given.strip()
    parts = split_token(given)  # a whole token names its id; never echo the secret part back
    token_id = parts[0] if parts else given
    if not re.fullmatch(r"[0-9a-f]{16}", token_id):  # may be a mangled token: do not print it
        print("error: not a token id (16 hex digits) nor a whole token (oc_<id>_<secret>)", file=sys.stderr)
        return 2
    team = store.revoke_token(token_id)
    if team is None:
        print(f"error: no token with id {token_id!r}", file=sys.stderr)
        return 2
    print(f"revoked token {token_id} of team {team} (cached by a server, it works {CACHE_SECONDS:g} s more)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
