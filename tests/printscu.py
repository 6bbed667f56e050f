"""A pynetdicom Print SCU for the tests: datasets for image boxes and the usual flow."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt

P = "1.2.840.10008.5.1.1."
FILM_SESSION, FILM_BOX = P + "1", P + "2"
GRAY_BOX, COLOR_BOX = P + "4", P + "4.1"
GRAY_META, COLOR_META = P + "9", P + "18"
PRINT_JOB, ANNOTATION, PRINTER, PRINTER_INSTANCE = P + "14", P + "15", P + "16", P + "17"
PLUT = P + "23"


def gray_item(
    rows: int = 64,
    cols: int = 48,
    bits: int = 12,
    photometric: str = "MONOCHROME2",
    level: float = 1.0,
) -> Dataset:
    """A Basic Grayscale Image Sequence item: a ramp with a bright top-left marker."""
    vmax = (1 << bits) - 1
    arr = np.tile(np.linspace(0, vmax * level, cols), (rows, 1))
    arr[: rows // 6, : cols // 6] = vmax
    item = Dataset()
    item.SamplesPerPixel = 1
    item.PhotometricInterpretation = photometric
    item.Rows, item.Columns = rows, cols
    item.PixelAspectRatio = [1, 1]
    item.BitsAllocated = 8 if bits == 8 else 16
    item.BitsStored, item.HighBit = bits, bits - 1
    item.PixelRepresentation = 0
    item.PixelData = arr.round().astype(np.uint8 if bits == 8 else "<u2").tobytes()
    return item


def rgb_item(rows: int = 48, cols: int = 64) -> Dataset:
    """A Basic Color Image Sequence item."""
    arr = np.zeros((rows, cols, 3), dtype=np.uint8)
    arr[..., 0] = np.linspace(0, 255, cols)[None, :]
    arr[..., 1] = np.linspace(0, 255, rows)[:, None]
    arr[..., 2] = 96
    item = Dataset()
    item.SamplesPerPixel = 3
    item.PhotometricInterpretation = "RGB"
    item.PlanarConfiguration = 0
    item.Rows, item.Columns = rows, cols
    item.BitsAllocated = item.BitsStored = 8
    item.HighBit = 7
    item.PixelRepresentation = 0
    item.PixelData = arr.tobytes()
    return item


def ref(cls: str, uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = cls
    item.ReferencedSOPInstanceUID = uid
    return item


class PrintSCU:
    """One association to the Print SCP; records the N-EVENT-REPORTs it receives."""

    def __init__(
        self, port: int, calling: str = "CT1", called: str = "APPLIANCE", color: bool = False
    ) -> None:
        self.meta = COLOR_META if color else GRAY_META
        self.color = color
        self.events: list[tuple[int, str, Dataset]] = []
        ae = AE(ae_title=calling)
        for uid in (self.meta, PRINT_JOB, PLUT, ANNOTATION, PRINTER):
            ae.add_requested_context(uid)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        self.assoc = ae.associate(
            "127.0.0.1",
            port,
            ae_title=called,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_event)],
        )

    def _on_event(self, event: evt.Event) -> tuple[int, None]:
        req = event.request
        self.events.append(
            (int(req.EventTypeID), str(req.AffectedSOPInstanceUID), event.event_information)
        )
        return 0x0000, None

    @property
    def ok(self) -> bool:
        return bool(self.assoc.is_established)

    def create(self, cls: str, ds: Dataset, uid: str | None = None) -> tuple[int, str, Any]:
        uid = uid or generate_uid()
        st, reply = self.assoc.send_n_create(ds, cls, uid, meta_uid=self._meta_for(cls))
        return int(st.Status), uid, reply if reply is not None else st

    def _meta_for(self, cls: str) -> str | None:
        return self.meta if cls in (FILM_SESSION, FILM_BOX, GRAY_BOX, COLOR_BOX, PRINTER) else None

    def session(self, **attrs: Any) -> tuple[int, str, Any]:
        ds = Dataset()
        ds.NumberOfCopies = attrs.pop("NumberOfCopies", 1)
        for k, v in attrs.items():
            setattr(ds, k, v)
        return self.create(FILM_SESSION, ds)

    def film_box(
        self, session_uid: str, fmt: str = "STANDARD\\1,1", **attrs: Any
    ) -> tuple[int, str, Any]:
        ds = Dataset()
        ds.ImageDisplayFormat = fmt
        ds.ReferencedFilmSessionSequence = [ref(FILM_SESSION, session_uid)]
        for k, v in attrs.items():
            setattr(ds, k, v)
        return self.create(FILM_BOX, ds)

    def set(self, cls: str, uid: str, ds: Dataset) -> tuple[int, Any]:
        st, reply = self.assoc.send_n_set(ds, cls, uid, meta_uid=self._meta_for(cls))
        return int(st.Status), st

    def image(
        self, box_uid: str, position: int, item: Dataset | None = None, **attrs: Any
    ) -> tuple[int, Any]:
        ds = Dataset()
        ds.ImageBoxPosition = position
        for k, v in attrs.items():
            setattr(ds, k, v)
        if item is None:
            item = rgb_item() if self.color else gray_item()
        if self.color:
            ds.BasicColorImageSequence = [item]
        else:
            ds.BasicGrayscaleImageSequence = [item]
        return self.set(COLOR_BOX if self.color else GRAY_BOX, box_uid, ds)

    def action(self, cls: str, uid: str, action_type: int = 1) -> tuple[int, Any]:
        st, reply = self.assoc.send_n_action(
            None, action_type, cls, uid, meta_uid=self._meta_for(cls)
        )
        return int(st.Status), reply if reply is not None else st

    def delete(self, cls: str, uid: str) -> int:
        st = self.assoc.send_n_delete(cls, uid, meta_uid=self._meta_for(cls))
        return int(st.Status)

    def get(self, cls: str, uid: str, tags: list[int] | None = None) -> tuple[int, Any]:
        st, reply = self.assoc.send_n_get(tags or [], cls, uid, meta_uid=self._meta_for(cls))
        return int(st.Status), reply if reply is not None else st

    def release(self) -> None:
        """Release; abort instead if pynetdicom's release never returns.

        pynetdicom's ``Association.release()`` busy-waits for its reactor to pause, which
        never happens while the reactor serves an N-EVENT-REPORT from the printer; under
        load this hung whole test runs (seen twice). The SCU side is at fault, not the
        appliance, so the test client aborts after 10 s rather than hang.
        """
        if not self.assoc.is_established:
            return
        releaser = threading.Thread(target=self.assoc.release, daemon=True)
        releaser.start()
        releaser.join(10)
        if releaser.is_alive():
            self.assoc.abort()

    def print_film(
        self,
        fmt: str = "STANDARD\\1,1",
        positions: list[int] | None = None,
        session_attrs: dict | None = None,
        item_attrs: dict | None = None,
        **film_attrs: Any,
    ) -> tuple[str, str]:
        """Session, film box, image boxes, N-ACTION on the film box: (film box, print job).
        ``item_attrs`` go into every image's item (Patient Name, ID, Accession Number...)."""
        st, session_uid, _ = self.session(**(session_attrs or {}))
        assert st == 0, hex(st)
        st, box_uid, reply = self.film_box(session_uid, fmt, **film_attrs)
        assert st == 0, hex(st)
        boxes = [item.ReferencedSOPInstanceUID for item in reply.ReferencedImageBoxSequence]
        for pos in positions or range(1, len(boxes) + 1):
            item = self._item_for(pos)
            for k, v in (item_attrs or {}).items():
                setattr(item, k, v)
            st, _ = self.image(boxes[pos - 1], pos, item)
            assert st == 0, hex(st)
        st, reply = self.action(FILM_BOX, box_uid)
        assert st == 0, hex(st)
        return box_uid, str(reply.ReferencedPrintJobSequence[0].ReferencedSOPInstanceUID)

    def _item_for(self, pos: int) -> Dataset:
        return rgb_item() if self.color else gray_item(level=0.4 + 0.1 * pos)
