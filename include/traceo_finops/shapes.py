"""Names for the values whose shape no static type can state, so that ``Any`` appears here and nowhere else.

``Json`` is decoded JSON read by a layout the reader knows: a Prometheus answer, a step's payload that
crossed XCom, a commit marker read back from the report root. Its shape is checked where it is read
(or by the JSON's own producer), not by the type checker. JSON that is only built and passed on has a
real type, :data:`JsonValue`.
"""

from __future__ import annotations

from typing import Any, TypeAlias

Json: TypeAlias = Any
JsonObject: TypeAlias = dict[str, Json]
JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None"

# A boto3 S3 client: boto3 ships no type information (boto3-stubs is not installed).
S3Client: TypeAlias = Any
