"""Film sessions, film boxes, image boxes and print jobs in SQLite; pixels in prints/.

Pixel files are written temp + fsync + rename before the row that names them is
committed, so a restart finds every accepted image box. Each N-SET writes a new file;
a queued job names the files it prints, and files nobody names are purged later.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from appliance.db import Store
from appliance.fsutil import fsync_path

PIXELS_DIR = "pixels"
JOBS_DIR = "jobs"


def _load(row: dict[str, Any] | None, *keys: str) -> dict[str, Any] | None:
    if row is None:
        return None
    for key in keys:
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row


class PrintRepo:
    """SQL and files of the printing service."""

    def __init__(self, store: Store, prints_dir: Path) -> None:
        self.store = store
        self.root = prints_dir
        (self.root / PIXELS_DIR).mkdir(parents=True, exist_ok=True)
        (self.root / JOBS_DIR).mkdir(parents=True, exist_ok=True)

    # -- files ------------------------------------------------------------

    def save_pixels(self, array: np.ndarray) -> str:
        """Write an image box's pixels durably; returns the file name relative to prints/."""
        name = f"{PIXELS_DIR}/{uuid.uuid4().hex}.npy"
        path = self.root / name
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
        return name

    def load_pixels(self, name: str) -> np.ndarray:
        """An image box's pixels, memory-mapped (read only when drawn)."""
        return np.load(self.root / name, mmap_mode="r", allow_pickle=False)

    def job_dir(self, job_uid: str) -> Path:
        """The folder holding a job's document and page previews."""
        return self.root / JOBS_DIR / job_uid

    # -- film sessions ----------------------------------------------------

    def create_session(
        self, uid: str, calling: str, called: str, meta: str, attrs: dict[str, Any]
    ) -> None:
        """Record a new Film Session."""
        with self.store.write() as db:
            db.table("print_sessions").insert(
                {
                    "uid": uid,
                    "calling_ae": calling,
                    "called_ae": called,
                    "meta": meta,
                    "attrs": json.dumps(attrs),
                }
            )

    def session(self, uid: str) -> dict[str, Any] | None:
        """An open Film Session, or None."""
        rows = self.store.query(
            "SELECT * FROM print_sessions WHERE uid = ? AND state = 'open'", (uid,)
        )
        return _load(rows[0] if rows else None, "attrs")

    def update_session(self, uid: str, attrs: dict[str, Any]) -> None:
        """Replace a Film Session's attributes."""
        with self.store.write() as db:
            db.execute(
                "UPDATE print_sessions SET attrs = ? WHERE uid = ?", (json.dumps(attrs), uid)
            )

    def delete_session(self, uid: str) -> None:
        """N-DELETE of a Film Session: it and its film boxes are gone (jobs stay)."""
        with self.store.write() as db:
            db.execute("UPDATE print_sessions SET state = 'deleted' WHERE uid = ?", (uid,))
            db.execute(
                "UPDATE print_film_boxes SET state = 'deleted' WHERE session_uid = ?", (uid,)
            )

    # -- film boxes -------------------------------------------------------

    def create_film_box(
        self,
        uid: str,
        session_uid: str,
        attrs: dict[str, Any],
        image_boxes: list[tuple[str, int, bool]],
        annotations: list[tuple[str, int]],
    ) -> None:
        """Record a Film Box with its (uid, position, colour) image and annotation boxes."""
        with self.store.write() as db:
            db.table("print_film_boxes").insert(
                {"uid": uid, "session_uid": session_uid, "attrs": json.dumps(attrs)}
            )
            db.table("print_image_boxes").insert_all(
                {"uid": u, "film_box_uid": uid, "position": p, "color": int(c)}
                for u, p, c in image_boxes
            )
            db.table("print_annotations").insert_all(
                {"uid": u, "film_box_uid": uid, "position": p} for u, p in annotations
            )

    def film_box(self, uid: str) -> dict[str, Any] | None:
        """An open Film Box, or None."""
        rows = self.store.query(
            "SELECT * FROM print_film_boxes WHERE uid = ? AND state != 'deleted'", (uid,)
        )
        return _load(rows[0] if rows else None, "attrs")

    def film_boxes(self, session_uid: str) -> list[dict[str, Any]]:
        """The open Film Boxes of a session, in creation order."""
        rows = self.store.query(
            "SELECT * FROM print_film_boxes WHERE session_uid = ? AND state != 'deleted' "
            "ORDER BY created_at, rowid",
            (session_uid,),
        )
        return [_load(r, "attrs") for r in rows]  # type: ignore[misc]

    def update_film_box(self, uid: str, attrs: dict[str, Any]) -> None:
        """Replace a Film Box's attributes."""
        with self.store.write() as db:
            db.execute(
                "UPDATE print_film_boxes SET attrs = ? WHERE uid = ?", (json.dumps(attrs), uid)
            )

    def delete_film_box(self, uid: str) -> None:
        """N-DELETE of a Film Box."""
        with self.store.write() as db:
            db.execute("UPDATE print_film_boxes SET state = 'deleted' WHERE uid = ?", (uid,))

    # -- image boxes and annotations ------------------------------------------

    def image_box(self, uid: str) -> dict[str, Any] | None:
        """An Image Box with its film box's attributes (as film_attrs), or None."""
        rows = self.store.query(
            "SELECT i.*, f.attrs AS film_attrs FROM print_image_boxes i "
            "JOIN print_film_boxes f ON f.uid = i.film_box_uid "
            "WHERE i.uid = ? AND f.state != 'deleted'",
            (uid,),
        )
        return _load(rows[0] if rows else None, "attrs", "pixel_info", "film_attrs")

    def image_boxes(self, film_box_uid: str) -> list[dict[str, Any]]:
        """Every Image Box of a film box, by position."""
        rows = self.store.query(
            "SELECT * FROM print_image_boxes WHERE film_box_uid = ? ORDER BY position",
            (film_box_uid,),
        )
        return [_load(r, "attrs", "pixel_info") for r in rows]  # type: ignore[misc]

    def set_image_box(
        self, uid: str, attrs: dict[str, Any], pixel_file: str | None, info: dict[str, Any]
    ) -> None:
        """Store an Image Box N-SET; pixel_file None keeps the pixels it had."""
        with self.store.write() as db:
            if pixel_file is None:
                db.execute(
                    "UPDATE print_image_boxes SET attrs = ? WHERE uid = ?", (json.dumps(attrs), uid)
                )
            else:
                db.execute(
                    "UPDATE print_image_boxes SET attrs = ?, pixel_file = ?, pixel_info = ? "
                    "WHERE uid = ?",
                    (json.dumps(attrs), pixel_file, json.dumps(info), uid),
                )

    def annotation(self, uid: str) -> dict[str, Any] | None:
        """An Annotation Box of an open film box, or None."""
        rows = self.store.query(
            "SELECT a.* FROM print_annotations a JOIN print_film_boxes f "
            "ON f.uid = a.film_box_uid WHERE a.uid = ? AND f.state != 'deleted'",
            (uid,),
        )
        return rows[0] if rows else None

    def set_annotation(self, uid: str, text: str) -> None:
        """Store an Annotation Box's text."""
        with self.store.write() as db:
            db.execute("UPDATE print_annotations SET text = ? WHERE uid = ?", (text, uid))

    def annotations(self, film_box_uid: str) -> list[str]:
        """The non-empty annotation texts of a film box, by position."""
        rows = self.store.query(
            "SELECT text FROM print_annotations WHERE film_box_uid = ? AND text != '' "
            "ORDER BY position",
            (film_box_uid,),
        )
        return [r["text"] for r in rows]

    # -- presentation LUTs --------------------------------------------------

    def create_lut(self, uid: str, calling: str, attrs: dict[str, Any]) -> None:
        """Record a Presentation LUT."""
        with self.store.write() as db:
            db.table("print_luts").insert(
                {"uid": uid, "calling_ae": calling, "attrs": json.dumps(attrs)}
            )

    def lut(self, uid: str) -> dict[str, Any] | None:
        """A Presentation LUT's attributes, or None."""
        rows = self.store.query(
            "SELECT attrs FROM print_luts WHERE uid = ? AND state = 'open'", (uid,)
        )
        return json.loads(rows[0]["attrs"]) if rows else None

    def delete_lut(self, uid: str) -> bool:
        """N-DELETE of a Presentation LUT; False when there is none."""
        with self.store.write() as db:
            cur = db.execute(
                "UPDATE print_luts SET state = 'deleted' WHERE uid = ? AND state = 'open'", (uid,)
            )
            return cur.rowcount > 0

    # -- print jobs ---------------------------------------------------------------

    def create_job(self, row: dict[str, Any], film_box_uids: list[str]) -> None:
        """Queue a job and mark its film boxes printed, in one transaction."""
        with self.store.write() as db:
            db.table("print_jobs").insert({**row, "spec": json.dumps(row["spec"])})
            for uid in film_box_uids:
                db.execute("UPDATE print_film_boxes SET state = 'printed' WHERE uid = ?", (uid,))

    def job(self, uid: str) -> dict[str, Any] | None:
        """A print job row (spec decoded), or None."""
        rows = self.store.query("SELECT * FROM print_jobs WHERE uid = ?", (uid,))
        return _load(rows[0] if rows else None, "spec")

    def update_job(self, uid: str, **fields: Any) -> None:
        """Set some columns of a job."""
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.store.write() as db:
            db.execute(f"UPDATE print_jobs SET {cols} WHERE uid = ?", (*fields.values(), uid))

    def unfinished_jobs(self) -> list[tuple[str, str]]:
        """(uid, Print Priority) of the jobs to resume after a restart, oldest first."""
        rows = self.store.query(
            "SELECT uid, priority FROM print_jobs WHERE state IN ('PENDING', 'PRINTING') "
            "ORDER BY created_at, rowid"
        )
        return [(r["uid"], r["priority"]) for r in rows]

    def expire_sessions(self, hours: float) -> int:
        """Film sessions left open longer than ``hours`` (their association long gone) end."""
        cutoff = f"-{hours} hours"
        with self.store.write() as db:
            cur = db.execute(
                "UPDATE print_sessions SET state = 'deleted' WHERE state = 'open' "
                "AND created_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?)",
                (cutoff,),
            )
            db.execute(
                "UPDATE print_film_boxes SET state = 'deleted' WHERE session_uid IN "
                "(SELECT uid FROM print_sessions WHERE state = 'deleted')"
            )
            return cur.rowcount

    def purge_pixels(self) -> int:
        """Delete pixel files that no open image box and no unfinished job names."""
        keep: set[str] = set()
        for row in self.store.query(
            "SELECT i.pixel_file FROM print_image_boxes i JOIN print_film_boxes f "
            "ON f.uid = i.film_box_uid WHERE f.state != 'deleted' AND i.pixel_file IS NOT NULL"
        ):
            keep.add(row["pixel_file"])
        for row in self.store.query(
            "SELECT spec FROM print_jobs WHERE state IN ('PENDING', 'PRINTING')"
        ):
            for film in json.loads(row["spec"])["films"]:
                keep.update(b["file"] for b in film["boxes"])
        removed = 0
        for path in (self.root / PIXELS_DIR).iterdir():
            if f"{PIXELS_DIR}/{path.name}" not in keep:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
