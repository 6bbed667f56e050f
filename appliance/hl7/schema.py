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
            placer_ei TEXT NOT NULL DEFAULT '',
            filler_ei TEXT NOT NULL DEFAULT '',
            sender TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL DEFAULT {NOW}
        );
        CREATE INDEX hl7_orders_placer ON hl7_orders(placer);
        CREATE INDEX hl7_orders_filler ON hl7_orders(filler);
        """,
    )


@migrations(name="0002_status_outbox")
def _m0002(db: sqlite_utils.Database) -> None:
    # A step of an HL7 order that starts, completes or is discontinued leaves an event in
    # the same transaction as the change (whoever made it: MPPS, the web UI); the outbound
    # worker turns each event into one message per [[hl7.outbound]] RIS.
    run_script(
        db,
        f"""
        CREATE TABLE hl7_status_events (
            pk INTEGER PRIMARY KEY,
            step_pk INTEGER NOT NULL,
            status TEXT NOT NULL,
            at TEXT NOT NULL DEFAULT {NOW}
        );
        CREATE TABLE hl7_outbox (
            pk INTEGER PRIMARY KEY,
            destination TEXT NOT NULL,
            event_pk INTEGER NOT NULL,
            step_pk INTEGER NOT NULL,
            status TEXT NOT NULL,
            control_id TEXT NOT NULL,
            message TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'waiting',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt REAL NOT NULL DEFAULT 0,
            last_error TEXT NOT NULL DEFAULT '',
            ack_code TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL DEFAULT {NOW},
            updated_at TEXT NOT NULL DEFAULT {NOW},
            UNIQUE (destination, event_pk)
        );
        CREATE INDEX hl7_outbox_waiting ON hl7_outbox(destination, state, pk);
        """,
    )
    # One statement with ';' inside, so not through run_script.
    db.execute(
        """CREATE TRIGGER hl7_step_status AFTER UPDATE OF status ON steps
           WHEN NEW.status != OLD.status
                AND NEW.status IN ('STARTED', 'COMPLETED', 'DISCONTINUED')
                AND EXISTS (SELECT 1 FROM hl7_orders WHERE step_pk = NEW.pk)
           BEGIN
               INSERT INTO hl7_status_events(step_pk, status) VALUES (NEW.pk, NEW.status);
           END"""
    )
