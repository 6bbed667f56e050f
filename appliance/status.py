"""DICOM status codes by meaning (PS3.7 Annex C, PS3.4); never bare hex elsewhere."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

# General (PS3.7 C.1-C.5)
SUCCESS = 0x0000
CANCEL = 0xFE00
PENDING = 0xFF00
PENDING_WARNING = 0xFF01  # C-FIND: one or more optional keys not supported (PS3.4 C.4.1.1.4)

# DIMSE-N failures (PS3.7 C.4)
NO_SUCH_ATTRIBUTE = 0x0105
INVALID_ATTRIBUTE_VALUE = 0x0106
ATTRIBUTE_LIST_ERROR = 0x0107
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_SOP_INSTANCE = 0x0112
NO_SUCH_EVENT_TYPE = 0x0113
NO_SUCH_ARGUMENT = 0x0114
INVALID_ARGUMENT_VALUE = 0x0115
ATTRIBUTE_VALUE_OUT_OF_RANGE = 0x0116
INVALID_OBJECT_INSTANCE = 0x0117
NO_SUCH_SOP_CLASS = 0x0118
CLASS_INSTANCE_CONFLICT = 0x0119
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121
SOP_CLASS_NOT_SUPPORTED = 0x0122
NO_SUCH_ACTION_TYPE = 0x0123
NOT_AUTHORIZED = 0x0124
DUPLICATE_INVOCATION = 0x0210
UNRECOGNIZED_OPERATION = 0x0211
MISTYPED_ARGUMENT = 0x0212
RESOURCE_LIMITATION = 0x0213

# C-FIND / C-STORE (PS3.4 B.2.3, C.4.1.1.4)
OUT_OF_RESOURCES = 0xA700
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC000
CANNOT_UNDERSTAND = 0xC000
COERCION_OF_DATA_ELEMENTS = 0xB000
ELEMENTS_DISCARDED = 0xB006
DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007

# Print Management (PS3.4 H.4)
PRINT_MEMORY_ALLOCATION_NOT_SUPPORTED = 0xB600
PRINT_COLLATION_NOT_SUPPORTED = 0xB601
PRINT_EMPTY_PAGE = 0xB602
PRINT_EMPTY_PAGE_NO_IMAGE = 0xB603
PRINT_IMAGE_DEMAGNIFIED = 0xB604
PRINT_DENSITY_OUT_OF_RANGE = 0xB605
PRINT_IMAGE_CROPPED = 0xB609
PRINT_IMAGE_DECIMATED = 0xB60A
PRINT_NO_FILM_BOXES = 0xC600
PRINT_QUEUE_FULL = 0xC601
PRINT_QUEUE_FULL_FILM_BOX = 0xC602
PRINT_IMAGE_LARGER_THAN_BOX = 0xC603
PRINT_INSUFFICIENT_MEMORY = 0xC605
PRINT_COMBINED_IMAGE_TOO_LARGE = 0xC613
PRINT_UNPRINTED_FILM_BOX_EXISTS = 0xC616


def is_failure(status: int) -> bool:
    """True when a status is neither success, warning, pending nor cancel."""
    return not (
        status == SUCCESS
        or status in (CANCEL, PENDING, PENDING_WARNING)
        or 0xB000 <= status <= 0xBFFF
        or status in (0x0001, 0x0107, 0x0116)
    )


# Storage Commitment failure reasons (PS3.4 J.3.3.1.1, Failure Reason (0008,1197))
DUPLICATE_TRANSACTION_UID = 0x0131

# Status ranges (PS3.4 B.2.3, PS3.7 C): classes of C-STORE responses.
OUT_OF_RESOURCES_RANGE = range(0xA700, 0xA800)
DATASET_MISMATCH_RANGE = range(0xA900, 0xAA00)
CANNOT_UNDERSTAND_RANGE = range(0xC000, 0xD000)
WARNING_RANGE = range(0xB000, 0xC000)

# Query/Retrieve C-MOVE / C-GET (PS3.4 C.4.2.1.5, C.4.3.1.4)
TOO_MANY_MATCHES = 0xA701  # out of resources: unable to calculate number of matches
UNABLE_TO_PERFORM_SUBOPERATIONS = 0xA702
MOVE_DESTINATION_UNKNOWN = 0xA801
SUBOPERATIONS_COMPLETE_WITH_FAILURES = 0xB000


def error_comment(text: str) -> str:
    """An Error Comment (0000,0902) value: LO, at most 64 characters, no backslash (it
    would split the value) and no control characters."""
    clean = "".join(" " if ord(c) < 0x20 else c for c in text.replace("\\", "/"))
    return clean[:64]


def response(code: int, comment: str = "", **elements: object) -> Any:
    """A status data set for a pynetdicom handler: Status, the Error Comment if any, and
    any other elements given by keyword (AffectedSOPInstanceUID=...)."""
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = error_comment(comment)
    for keyword, value in elements.items():
        if value is not None:
            setattr(ds, keyword, value)
    return ds
