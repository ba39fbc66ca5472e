"""Loaded by the schemathesis CLI (SCHEMATHESIS_HOOKS): how to make the bodies of media types
it has no serializer for. A tus body is raw bytes: random ones, and some that begin as a PNG."""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

schemathesis.openapi.media_type(
    "application/offset+octet-stream",
    st.one_of(
        st.binary(max_size=2048),
        st.binary(max_size=2048).map(lambda rest: PNG_SIGNATURE + rest),
    ),
)
