"""The HL7 listener's tables: messages received with the ACK they got, orders' keys."""

from __future__ import annotations

import sqlite_utils
from sqlite_utils.migrations import Migrations

from appliance.db import run_script

migrations = Migrations("hl7")

NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"


@migrations(name="0001_messages_orders")
def _m0001(db: sqlite_utils.Database) -> None:
    run_script(
        db,
        f"""
        CREATE TABLE hl7_messages (
            pk INTEGER PRIMARY KEY,
            received_at TEXT NOT NULL DEFAULT {NOW},
            sender TEXT NOT NULL,
            control_id TEXT NOT NULL,
            message_type TEXT NOT NULL,
            peer TEXT NOT NULL DEFAULT '',
            ack_code TEXT NOT NULL,
            ack TEXT NOT NULL,
            error TEXT NOT NULL DEFAULT '',
            duplicates INTEGER NOT NULL DEFAULT 0,
            UNIQUE (sender, control_id)
        );
        CREATE INDEX hl7_messages_received ON hl7_messages(received_at);

        CREATE TABLE hl7_orders (
            step_pk INTEGER PRIMARY KEY REFERENCES steps(pk),
            placer TEXT NOT NULL DEFAULT '',
            filler TEXT NOT NULL DEFAULT '',
            sender TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL DEFAULT {NOW}
        );
        CREATE INDEX hl7_orders_placer ON hl7_orders(placer);
        CREATE INDEX hl7_orders_filler ON hl7_orders(filler);
        """,
    )
