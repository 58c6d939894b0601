"""The cloud-init user-data of an overcast node on Lambda: a bash script that writes the API key to a
root-only file, sets the job's environment, writes the job's setup + run to a file and hands over to the
node agent (``overcast.backends.lambda_agent``).

Lambda has no instance metadata service and no instance identity, so the agent needs the account's API
key to find its gang and record its exit code. The key goes into a file of mode 600 (written through a
here-document: never on a command line, never exported, so neither the job's environment nor ``ps`` nor
the agent's log shows it); the agent reads it from there. docs/lambda.md says what this does not protect.

Each rank gets its own script only in ``--launch``: the nonce of its launch request, by which the agent
finds its own instance in the listing.
"""

from __future__ import annotations

import shlex

from overcast.backends.base import JobRejected, LaunchRequest
from overcast.backends.cloud_agent import agent_command
from overcast.backends.lambda_client import KEY_CHARS, LambdaSettings
from overcast.backends.node_boot import boot_script

USER_DATA_LIMIT = 1_000_000  # Lambda: user_data up to 1 MB
_KEY_EOF = "OVERCAST_LAMBDA_KEY_EOF"


def key_file_script(path: str, key: str) -> str:
    """Shell that writes ``key`` to ``path`` (mode 600, directory 700), atomically: a rename, so a reader
    never sees half a key."""
    if not KEY_CHARS.match(key):
        raise ValueError("the Lambda API key has unexpected characters")
    target = shlex.quote(path)
    tmp = target + ".$$"  # this shell's own temporary name: nodes sharing a folder do not collide
    folder = shlex.quote(path.rsplit("/", 1)[0] or "/")
    return (
        "# the Lambda API key, for the agent only: root-only file, never exported to the job\n"
        f"(umask 077 && mkdir -p {folder} && cat > {tmp} <<'{_KEY_EOF}' && mv -f {tmp} {target}\n"
        f"{key}\n{_KEY_EOF}\n)\n"
    )


def user_data(settings: LambdaSettings, request: LaunchRequest, key: str, launch_id: str) -> str:
    """The script (plain text: Lambda's ``user_data`` is not base64)."""
    first = ["--api", settings.api_url, "--key-file", settings.key_path, "--owner", settings.owner]
    last = ["--launch", launch_id, "--linger", str(settings.agent_linger_seconds)]
    module = "overcast.backends.lambda_agent"
    agent = agent_command(
        settings.python, module, request, settings.agent_poll_seconds, first, last, settings.logs_url
    )
    bootstrap = key_file_script(settings.key_path, key) + settings.bootstrap
    text = boot_script(request, bootstrap, agent)
    if len(text.encode()) > USER_DATA_LIMIT:
        raise JobRejected(f"user-data is {len(text.encode())} bytes, Lambda takes {USER_DATA_LIMIT}")
    return text
