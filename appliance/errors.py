"""The appliance's exception tree, drawn in one place.

Domain code raises these; the DICOM edge maps them to a status with an ErrorComment,
the web edge to an HTTP status that names the field.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose."""


class ConfigError(ApplianceError):
    """A setting is invalid; ``setting`` names it (``dicom.ae_title``, ``devices[0].port``)."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"{setting}: {reason}")
        self.setting = setting
        self.reason = reason


class ValidationError(ApplianceError):
    """Input to the domain is invalid; ``field`` names the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(ApplianceError):
    """The named record does not exist."""


class Conflict(ApplianceError):
    """The request conflicts with the current state (duplicate, final state...)."""


class StorageFull(ApplianceError):
    """Free space on the data directory's file system is below the reserve."""
