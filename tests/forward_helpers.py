"""Helpers of the forward tests: a pynetdicom modality and appliance settings."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pynetdicom import AE

MODALITY = "MODALITY"


def send_files(
    port: int,
    paths: Iterable[Path],
    calling: str = MODALITY,
    called: str = "APPLIANCE",
) -> list[int | None]:
    """C-STORE every file over one association; each response status (None: no answer)."""
    datasets = [dcmread(p) for p in paths]
    ae = AE(ae_title=calling)
    for pair in {(d.SOPClassUID, d.file_meta.TransferSyntaxUID) for d in datasets}:
        ae.add_requested_context(pair[0], [pair[1]])
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, "the appliance refused the association"
    out: list[int | None] = []
    try:
        for ds in datasets:
            rsp = assoc.send_c_store(ds)
            out.append(int(rsp.Status) if rsp and "Status" in rsp else None)
    finally:
        assoc.release()
    return out


def forward_config(
    destinations: list[dict[str, Any]], devices: Iterable[str] = (MODALITY,), **forward: Any
) -> dict[str, Any]:
    """TOML-shaped settings: the devices allowed to store, fast retries, no disk reserve."""
    return {
        "devices": [{"ae_title": d} for d in devices],
        "destinations": destinations,
        "forward": {"reserve_mb": 0, "retry_initial": 0.05, "retry_max": 0.5, **forward},
    }


def pacs_destination(name: str, ae_title: str, port: int, **rules: Any) -> dict[str, Any]:
    return {"name": name, "ae_title": ae_title, "host": "127.0.0.1", "port": port, **rules}
