"""The cloud-init user-data of an overcast node on OCI: a bash script that sets the job's environment,
writes the job's setup + run to a file and hands over to the node agent (``overcast.backends.oci_agent``).

It goes into the instance's ``metadata["user_data"]`` (base64). Every rank gets the same script; the
agent reads its rank from its own freeform tags in the instance metadata service.
"""

from __future__ import annotations

import base64
import shlex

from overcast.backends.aws_userdata import _shell_path, job_script
from overcast.backends.base import LaunchRequest
from overcast.backends.oci_client import OciSettings

METADATA_LIMIT = 32_000  # OCI: metadata + extendedMetadata together, in bytes
_EOF = "OVERCAST_JOB_SCRIPT_EOF"


def user_data(settings: OciSettings, request: LaunchRequest) -> str:
    """The script, base64-encoded as ``metadata["user_data"]`` wants it."""
    script = job_script(request)
    if any(line == _EOF for line in script.splitlines()):
        raise ValueError(f"the job's script may not contain a line {_EOF!r}")
    env = request.spec.env | request.env | {"OVERCAST_NUM_NODES": str(request.num_nodes)}
    exports = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in sorted(env.items()))
    agent = [
        settings.python, "-m", "overcast.backends.oci_agent", "--region", settings.region,
        "--compartment", settings.compartment_id, "--job", request.job_id,
        "--attempt", str(request.attempt), "--nodes", str(request.num_nodes),
        "--poll", str(settings.agent_poll_seconds),
    ]  # fmt: skip
    if settings.endpoint:
        agent += ["--endpoint", settings.endpoint]
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
    if len(encoded) > METADATA_LIMIT - 100:  # room for ssh_authorized_keys' key name etc.
        raise ValueError(f"user-data is {len(encoded)} bytes in base64, OCI metadata takes {METADATA_LIMIT}")
    return encoded
