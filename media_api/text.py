"""What a client may write into a text field, a query parameter or a path segment: one rule,
used by every request model and route through the `Annotated` markers below (`single_line`,
`multi_line`, `encodable`; `SingleLine` for a plain string). No control characters, no lone
surrogates; file names are cleaned instead of refused. The reasons: docs/architecture.md, "Text".
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

# As regular-expression class bodies in \u notation, which ECMA-262 (the OpenAPI `pattern`
# dialect) and Python read alike.
CONTROLS = r"\u0000-\u001F\u007F-\u009F"
CONTROLS_BUT_LINE_BREAKS = r"\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F"
SURROGATES = r"\uD800-\uDFFF"

SINGLE_LINE_PATTERN = rf"^[^{CONTROLS}]*$"
MULTI_LINE_PATTERN = rf"^[^{CONTROLS_BUT_LINE_BREAKS}]*$"

_SURROGATE = re.compile(f"[{SURROGATES}]")


class Refuse:
    """`Annotated` marker: refuse strings holding any character of `chars` (a class body), and
    publish the rule as a JSON Schema `pattern` unless `published` is False."""

    def __init__(self, chars: str, message: str, *, published: bool = True) -> None:
        self.found = re.compile(f"[{chars}{SURROGATES}]")  # lone surrogates: always
        self.message = message
        self.pattern = f"^[^{chars}]*$" if published else None

    def check(self, value: Any) -> Any:
        """The value unchanged, or a validation error FastAPI turns into a 422."""
        if not isinstance(value, str):
            return value  # None, for an optional parameter
        match = self.found.search(value)
        if match is None:
            return value
        char = match.group()
        if _SURROGATE.match(char):
            raise PydanticCustomError(
                "lone_surrogate",
                "must be valid Unicode: U+{code} is half of a surrogate pair",
                {"code": f"{ord(char):04X}"},
            )
        raise PydanticCustomError(
            "control_character",
            "{message} (found U+{code} at index {index})",
            {"message": self.message, "code": f"{ord(char):04X}", "index": match.start()},
        )

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        if self.pattern is not None:
            json_schema["pattern"] = self.pattern
        return json_schema


# The markers. Length limits go before them, `Annotated[str, Field(max_length=200),
# single_line]`, so that pydantic checks the limits on the string itself (after a validator it
# would check a "value" of "items").
single_line = Refuse(CONTROLS, "must not contain control characters")
"""A name, title, tag, email, cursor or path segment."""
multi_line = Refuse(
    CONTROLS_BUT_LINE_BREAKS, "must not contain control characters but tab and newline"
)
"""Free text over several lines (a description)."""
encodable = Refuse("", "", published=False)
"""Any text UTF-8 can carry (a password)."""

SingleLine = Annotated[str, single_line]


_FILENAME_DROPPED = re.compile(f"[{CONTROLS}{SURROGATES}]")


def clean_filename(name: str) -> str:
    """The client's file name without control characters (and lone surrogates)."""
    return _FILENAME_DROPPED.sub("", name)
