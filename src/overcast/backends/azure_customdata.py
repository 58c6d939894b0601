"""The custom data of an overcast VM on Azure: a bash script (cloud-init runs it at first boot) that sets
the job's environment, writes the job's setup + run to a file and hands over to the node agent
(``overcast.backends.azure_agent``).

Every VM of a gang gets the same script; the agent learns its rank from its own ``overcast-rank`` tag
(in the instance metadata service) and the head's address from rank 0's ``overcast-ip`` tag.
"""

from __future__ import annotations

import base64
import shlex

from overcast.backends.aws_userdata import _shell_path, job_script
from overcast.backends.azure_client import AzureSettings
from overcast.backends.base import LaunchRequest

CUSTOM_DATA_LIMIT = 64 * 1024  # Azure refuses more than 64 KiB of custom data (after base64)
_EOF = "OVERCAST_JOB_SCRIPT_EOF"


def custom_data(settings: AzureSettings, request: LaunchRequest) -> str:
    """The script, base64-encoded as ARM's ``osProfile.customData`` wants it."""
    script = job_script(request)
    if any(line == _EOF for line in script.splitlines()):
        raise ValueError(f"the job's script may not contain a line {_EOF!r}")
    env = request.spec.env | request.env | {"OVERCAST_NUM_NODES": str(request.num_nodes)}
    exports = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in sorted(env.items()))
    agent = [
        settings.python, "-m", "overcast.backends.azure_agent", "--job", request.job_id,
        "--attempt", str(request.attempt), "--nodes", str(request.num_nodes),
        "--poll", str(settings.agent_poll_seconds),
    ]  # fmt: skip
    if settings.endpoint:
        agent += ["--arm-endpoint", settings.endpoint]
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
    encoded = base64.b64encode(text.encode()).decode()
    if len(encoded) > CUSTOM_DATA_LIMIT:
        raise ValueError(f"custom data is {len(encoded)} bytes, Azure takes at most {CUSTOM_DATA_LIMIT}")
    return encoded
