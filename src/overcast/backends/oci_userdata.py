"""The cloud-init user-data of an overcast node on OCI: a bash script that sets the job's environment,
writes the job's setup + run to a file and hands over to the node agent (``overcast.backends.oci_agent``).

It goes into the instance's ``metadata["user_data"]`` (base64). Every rank gets the same script; the
agent reads its rank from its own freeform tags in the instance metadata service.
"""

from __future__ import annotations

import base64

from overcast.backends.base import JobRejected, LaunchRequest
from overcast.backends.cloud_agent import agent_command
from overcast.backends.node_boot import boot_script
from overcast.backends.oci_client import OciSettings

METADATA_LIMIT = 32_000  # OCI: metadata + extendedMetadata together, in bytes


def user_data(settings: OciSettings, request: LaunchRequest) -> str:
    """The script, base64-encoded as ``metadata["user_data"]`` wants it."""
    first = ["--region", settings.region, "--compartment", settings.compartment_id]
    last = ["--endpoint", settings.endpoint] if settings.endpoint else []
    module = "overcast.backends.oci_agent"
    agent = agent_command(
        settings.python, module, request, settings.agent_poll_seconds, first, last, settings.logs_url
    )
    text = boot_script(request, settings.bootstrap, agent)
    encoded = base64.b64encode(text.encode()).decode()
    if len(encoded) > METADATA_LIMIT - 100:  # room for ssh_authorized_keys' key name etc.
        raise JobRejected(f"user-data is {len(encoded)} bytes in base64, OCI metadata takes {METADATA_LIMIT}")
    return encoded
