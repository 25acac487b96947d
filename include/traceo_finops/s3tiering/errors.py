"""Errors of the S3 tiering workflow: each names the bucket (and the key) it is about.

Every one of them is raised before anything is written to a bucket, or after a failed write has
been checked, so a message can always say what state the bucket is in.
"""

from __future__ import annotations


class S3TieringError(RuntimeError):
    """Base class: a plan or an apply for one bucket cannot go on; nothing was changed."""

    def __init__(self, bucket: str, message: str):
        super().__init__(f"bucket {bucket!r}: {message}")
        self.bucket = bucket


class BucketNotFound(S3TieringError):
    """The bucket does not exist (S3 said NoSuchBucket)."""


class BucketAccessDenied(S3TieringError):
    """S3 refused an operation on the bucket (AccessDenied)."""

    def __init__(self, bucket: str, operation: str, detail: str = ""):
        extra = f" ({detail})" if detail else ""
        super().__init__(bucket, f"{operation} was denied (AccessDenied){extra}; "
                                 f"grant s3:{_permission(operation)} to the connection's identity")
        self.operation = operation


class InvalidULID(S3TieringError, ValueError):
    """A key's block directory is not a ULID."""

    def __init__(self, bucket: str, key: str, reason: str):
        super().__init__(bucket, f"key {key!r}: {reason}")
        self.key = key


class MalformedBlockMeta(S3TieringError):
    """A block's meta.json (or a Mimir bucket-index.json.gz) cannot be used."""

    def __init__(self, bucket: str, key: str, reason: str):
        super().__init__(bucket, f"{key}: {reason}")
        self.key = key


class S3RequestError(S3TieringError):
    """An S3 request failed for another reason: an error answer, or no answer at all (connection refused,
    dropped, timed out). The message names the operation."""

    def __init__(self, bucket: str, operation: str, detail: str):
        super().__init__(bucket, f"{operation} failed ({detail})")
        self.operation = operation


class InventoryError(S3TieringError):
    """An S3 Inventory report is incomplete, unreadable or not what its manifest says."""


class InventoryMissing(InventoryError):
    """No S3 Inventory report where the configuration points: the bucket is listed instead."""


class TooManyObjects(S3TieringError):
    """A listing went past ``workflows.s3_tiering.list_objects_max`` objects."""


class PlanError(S3TieringError):
    """The bucket's contents or configuration do not allow a safe plan."""


class LifecycleValidationError(S3TieringError):
    """A lifecycle configuration breaks an S3 rule or a Traceo safety rule."""

    def __init__(self, bucket: str, problems: list[str]):
        super().__init__(bucket, "lifecycle configuration refused, nothing was written:\n  " + "\n  ".join(problems))
        self.problems = problems


class ApplyError(S3TieringError):
    """A put or its verification failed; the message says what the bucket holds now."""


def _permission(operation: str) -> str:
    return {
        "GetBucketLifecycleConfiguration": "GetLifecycleConfiguration",
        "PutBucketLifecycleConfiguration": "PutLifecycleConfiguration",
        "DeleteBucketLifecycle": "PutLifecycleConfiguration",
        "ListObjectsV2": "ListBucket",
        "GetObject": "GetObject",
        "ListBucketIntelligentTieringConfigurations": "GetIntelligentTieringConfiguration",
    }.get(operation, operation)
