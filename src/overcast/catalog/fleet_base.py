"""Name types shared by the fleet file's models (fleet.py, fleet_clouds.py)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from overcast.spec.infra import provider_name

Name = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
# spelled as in the catalog and in workload specs ("AWS" -> "aws", "oracle" -> "oci"): compared as
# written, `disabled_providers: [AWS]` would disable nothing and an "AWS" quota would limit nothing
Provider = Annotated[Name, AfterValidator(provider_name)]
