"""The printing service's tables (sqlite-utils migration set "printing")."""

from __future__ import annotations

import sqlite_utils
from sqlite_utils.migrations import Migrations

printing = Migrations("printing")


@printing(name="0001_print_jobs")
def _printing_0001(db: sqlite_utils.Database) -> None:
    now = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
    db.execute(
        f"""CREATE TABLE print_sessions (
            uid TEXT PRIMARY KEY,
            calling_ae TEXT NOT NULL,
            called_ae TEXT NOT NULL,
            meta TEXT NOT NULL,
            attrs TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'open',
            created_at TEXT NOT NULL DEFAULT {now}
        )"""
    )
    db.execute(
        f"""CREATE TABLE print_film_boxes (
            uid TEXT PRIMARY KEY,
            session_uid TEXT NOT NULL REFERENCES print_sessions(uid),
            attrs TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'open',
            created_at TEXT NOT NULL DEFAULT {now}
        )"""
    )
    db.execute("CREATE INDEX print_film_boxes_session ON print_film_boxes(session_uid)")
    db.execute(
        """CREATE TABLE print_image_boxes (
            uid TEXT PRIMARY KEY,
            film_box_uid TEXT NOT NULL REFERENCES print_film_boxes(uid),
            position INTEGER NOT NULL,
            color INTEGER NOT NULL,
            attrs TEXT NOT NULL DEFAULT '{}',
            pixel_file TEXT,
            pixel_info TEXT NOT NULL DEFAULT '{}',
            UNIQUE (film_box_uid, position)
        )"""
    )
    db.execute(
        """CREATE TABLE print_annotations (
            uid TEXT PRIMARY KEY,
            film_box_uid TEXT NOT NULL REFERENCES print_film_boxes(uid),
            position INTEGER NOT NULL,
            text TEXT NOT NULL DEFAULT ''
        )"""
    )
    db.execute(
        f"""CREATE TABLE print_luts (
            uid TEXT PRIMARY KEY,
            calling_ae TEXT NOT NULL,
            attrs TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'open',
            created_at TEXT NOT NULL DEFAULT {now}
        )"""
    )
    db.execute(
        f"""CREATE TABLE print_jobs (
            uid TEXT PRIMARY KEY,
            session_uid TEXT,
            calling_ae TEXT NOT NULL,
            called_ae TEXT NOT NULL,
            label TEXT NOT NULL DEFAULT '',
            printer TEXT NOT NULL,
            priority TEXT NOT NULL DEFAULT 'MED',
            copies INTEGER NOT NULL DEFAULT 1,
            spec TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'PENDING',
            state_info TEXT NOT NULL DEFAULT '',
            films INTEGER NOT NULL DEFAULT 0,
            pages INTEGER NOT NULL DEFAULT 0,
            document TEXT,
            media TEXT NOT NULL DEFAULT '',
            warnings TEXT NOT NULL DEFAULT '',
            error TEXT NOT NULL DEFAULT '',
            attempts INTEGER NOT NULL DEFAULT 0,
            reprint_of TEXT,
            render_ms INTEGER,
            created_at TEXT NOT NULL DEFAULT {now},
            started_at TEXT,
            ready_at TEXT,
            delivered_at TEXT,
            finished_at TEXT
        )"""
    )
    db.execute("CREATE INDEX print_jobs_created ON print_jobs(created_at)")
    db.execute("CREATE INDEX print_jobs_state ON print_jobs(state)")
    db.execute("CREATE INDEX print_jobs_calling ON print_jobs(calling_ae, created_at)")


@printing(name="0002_history_paging")
def _printing_0002(db: sqlite_utils.Database) -> None:
    # Print history pages go newest first by (created_at, uid), a keyset cursor: an index
    # holding the UID answers a page, with or without a device, as one range search.
    # These replace the indexes on created_at and (calling_ae, created_at).
    db.execute("CREATE INDEX print_jobs_created_uid ON print_jobs(created_at, uid)")
    db.execute("CREATE INDEX print_jobs_calling_uid ON print_jobs(calling_ae, created_at, uid)")
    db.execute("DROP INDEX print_jobs_created")
    db.execute("DROP INDEX print_jobs_calling")


@printing(name="0003_printers")
def _printing_0003(db: sqlite_utils.Database) -> None:
    # Printers managed like devices and destinations (appliance/printing/printers.py).
    db.execute(
        """CREATE TABLE printers (
            name TEXT PRIMARY KEY,
            uri TEXT NOT NULL,
            position INTEGER NOT NULL DEFAULT 0,
            managed_by TEXT NOT NULL DEFAULT 'web',
            updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )"""
    )


@printing(name="0004_job_patient")
def _printing_0004(db: sqlite_utils.Database) -> None:
    # Whose films a job printed: Patient Name / ID / Accession Number of the printed
    # images where their items carried them, stored when the job is queued.
    for column in ("patient_name", "patient_id", "accession_number"):
        db.execute(f"ALTER TABLE print_jobs ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
