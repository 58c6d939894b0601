"""The user-data of an overcast node on EC2: a bash script that sets the job's environment, writes the
job's setup + run to a file and hands over to the node agent (``overcast.backends.aws_agent``).

All instances of a gang share one user-data (one ``run_instances`` call), so nothing rank-specific is in
it: the agent finds its rank (the instance's ``AmiLaunchIndex``) and the head's private IP at boot.
"""

from __future__ import annotations

from overcast.backends.aws_client import AwsSettings
from overcast.backends.base import JobRejected, LaunchRequest
from overcast.backends.cloud_agent import agent_command
from overcast.backends.node_boot import boot_script

USER_DATA_LIMIT = 16 * 1024  # EC2 refuses larger user-data (before base64)


def user_data(settings: AwsSettings, request: LaunchRequest) -> str:
    last = ["--endpoint-url", settings.endpoint_url] if settings.endpoint_url else []
    module = "overcast.backends.aws_agent"
    first = ["--region", settings.region]
    agent = agent_command(
        settings.python, module, request, settings.agent_poll_seconds, first, last, settings.logs_url
    )
    text = boot_script(request, settings.bootstrap, agent)
    if len(text.encode()) > USER_DATA_LIMIT:
        raise JobRejected(f"user-data is {len(text.encode())} bytes, EC2 takes at most {USER_DATA_LIMIT}")
    return text
