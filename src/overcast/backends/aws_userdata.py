"""The user-data of an overcast node on EC2: a bash script that sets the job's environment, writes the
job's setup + run to a file and hands over to the node agent (``overcast.backends.aws_agent``).

All instances of a gang share one user-data (one ``run_instances`` call), so nothing rank-specific is in
it: the agent finds its rank (the instance's ``AmiLaunchIndex``) and the head's private IP at boot.
"""

from __future__ import annotations

import shlex

from overcast.backends.aws_client import AwsSettings
from overcast.backends.base import LaunchRequest

USER_DATA_LIMIT = 16 * 1024  # EC2 refuses larger user-data (before base64)
_EOF = "OVERCAST_JOB_SCRIPT_EOF"


def job_script(request: LaunchRequest) -> str:
    spec = request.spec
    setup = f"set -e\n{spec.setup}\nset +e\n" if spec.setup else ""  # setup stops at its first failure
    return setup + (spec.run or "true") + "\n"


def _shell_path(path: str) -> str:
    """``path`` quoted for bash, with a leading ``~/`` left to expand to the node's home."""
    if path == "~" or path.startswith("~/"):
        rest = path[2:]
        return "~/" + (shlex.quote(rest) if rest else "")
    return shlex.quote(path)


def user_data(settings: AwsSettings, request: LaunchRequest) -> str:
    script = job_script(request)
    if any(line == _EOF for line in script.splitlines()):
        raise ValueError(f"the job's script may not contain a line {_EOF!r}")
    env = request.spec.env | request.env | {"OVERCAST_NUM_NODES": str(request.num_nodes)}
    exports = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in sorted(env.items()))
    agent = [
        settings.python, "-m", "overcast.backends.aws_agent", "--region", settings.region,
        "--job", request.job_id, "--attempt", str(request.attempt), "--nodes", str(request.num_nodes),
        "--poll", str(settings.agent_poll_seconds),
    ]  # fmt: skip
    if settings.endpoint_url:
        agent += ["--endpoint-url", settings.endpoint_url]
    workdir = f"cd {_shell_path(request.spec.workdir)}\n" if request.spec.workdir else ""
    text = (
        "#!/bin/bash\n"
        f"# overcast node: job {request.job_id} attempt {request.attempt} ({request.num_nodes} nodes)\n"
        f"{settings.bootstrap}\n"
        f"{exports}"
        'node_dir="$(mktemp -d /tmp/overcast-node.XXXXXX)"\n'
        f"cat > \"$node_dir/job.sh\" <<'{_EOF}'\n{script}{_EOF}\n"
        f"{workdir}"
        f'exec {shlex.join(agent)} -- bash "$node_dir/job.sh"\n'
    )
    if len(text.encode()) > USER_DATA_LIMIT:
        raise ValueError(f"user-data is {len(text.encode())} bytes, EC2 takes at most {USER_DATA_LIMIT}")
    return text
