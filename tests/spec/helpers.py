"""Small helpers for spec tests: load text as if it were a file, and catch the error it raises."""

from __future__ import annotations

import textwrap

import pytest

from overcast.spec.errors import SpecError
from overcast.spec.loader import LoadedSpec, load_spec_text


def load(text: str, source: str = "job.yaml") -> LoadedSpec:
    return load_spec_text(textwrap.dedent(text).lstrip("\n"), source)


def error(text: str, source: str = "job.yaml") -> SpecError:
    with pytest.raises(SpecError) as info:
        load(text, source)
    return info.value
