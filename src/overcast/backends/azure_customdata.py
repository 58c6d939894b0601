"""The custom data of an overcast VM on Azure: a bash script (cloud-init runs it at first boot) that sets
the job's environment, writes the job's setup + run to a file and hands over to the node agent
(``overcast.backends.azure_agent``).

Every VM of a gang gets the same script; the agent learns its rank from its own ``overcast-rank`` tag
(in the instance metadata service) and the head's address from rank 0's ``overcast-ip`` tag.
"""

from __future__ import annotations

import base64

from overcast.backends.azure_client import AzureSettings
from overcast.backends.base import JobRejected, LaunchRequest
from overcast.backends.cloud_agent import agent_command
from overcast.backends.node_boot import boot_script

CUSTOM_DATA_LIMIT = 64 * 1024  # Azure refuses more than 64 KiB of custom data (after base64)


def custom_data(settings: AzureSettings, request: LaunchRequest) -> str:
    """The script, base64-encoded as ARM's ``osProfile.customData`` wants it."""
    last = ["--arm-endpoint", settings.endpoint] if settings.endpoint else []
    module = "overcast.backends.azure_agent"
    agent = agent_command(
        settings.python, module, request, settings.agent_poll_seconds, [], last, settings.logs_url
    )
    text = boot_script(request, settings.bootstrap, agent)
    encoded = base64.b64encode(text.encode()).decode()
    if len(encoded) > CUSTOM_DATA_LIMIT:
        raise JobRejected(f"custom data is {len(encoded)} bytes, Azure takes at most {CUSTOM_DATA_LIMIT}")
    return encoded
