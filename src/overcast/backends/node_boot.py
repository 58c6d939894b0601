"""The boot script of a cloud node (EC2 user-data, Azure custom data, OCI cloud-init user-data): a bash
script that runs the account's bootstrap, exports the job's environment, writes the job's setup + run to a
file and hands over to the provider's node agent. Every node of a gang gets the same script: the agent
learns its rank and the head's address from the provider at boot.
"""

from __future__ import annotations

import re
import shlex

from overcast.backends.base import JobRejected, LaunchRequest

_EOF = "OVERCAST_JOB_SCRIPT_EOF"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def job_script(request: LaunchRequest) -> str:
    spec = request.spec
    setup = f"set -e\n{spec.setup}\nset +e\n" if spec.setup else ""  # setup stops at its first failure
    return setup + (spec.run or "true") + "\n"


def shell_path(path: str) -> str:
    """``path`` quoted for bash, with a leading ``~/`` left to expand to the node's home."""
    if path == "~" or path.startswith("~/"):
        rest = path[2:]
        return "~/" + (shlex.quote(rest) if rest else "")
    return shlex.quote(path)


def boot_script(request: LaunchRequest, bootstrap: str, agent: list[str]) -> str:
    """The script; ``agent`` is the agent's command line (the job's script is appended after ``--``)."""
    script = job_script(request)
    if any(line == _EOF for line in script.splitlines()):
        raise JobRejected(f"the job's script may not contain a line {_EOF!r}")
    env = request.spec.env | request.env | {"OVERCAST_NUM_NODES": str(request.num_nodes)}
    bad = sorted(key for key in env if not _ENV_NAME.fullmatch(key))
    if bad:  # it would be spliced into `export NAME=...` lines of a root shell script
        raise JobRejected(f"environment variable names must be shell names: {bad}")
    exports = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in sorted(env.items()))
    workdir = f"cd {shell_path(request.spec.workdir)}\n" if request.spec.workdir else ""
    return (
        "#!/bin/bash\n"
        f"# overcast node: job {request.job_id} attempt {request.attempt} ({request.num_nodes} nodes)\n"
        f"{bootstrap}\n"
        f"{exports}"
        'node_dir="$(mktemp -d /tmp/overcast-node.XXXXXX)"\n'
        f"cat > \"$node_dir/job.sh\" <<'{_EOF}'\n{script}{_EOF}\n"
        f"{workdir}"
        f'exec {shlex.join(agent)} -- bash "$node_dir/job.sh"\n'
    )
