"""The worklist's tables: patients, requested procedures, scheduled steps, MPPS."""

from __future__ import annotations

import sqlite_utils
from sqlite_utils.migrations import Migrations

from appliance.db import run_script

migrations = Migrations("worklist")

NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"


@migrations(name="0001_scheduling")
def _m0001(db: sqlite_utils.Database) -> None:
    run_script(
        db,
        f"""
        CREATE TABLE patients (
            pk INTEGER PRIMARY KEY,
            patient_id TEXT NOT NULL,
            issuer TEXT NOT NULL DEFAULT '',
            name TEXT NOT NULL,
            name_key TEXT NOT NULL,
            birth_date TEXT NOT NULL DEFAULT '',
            sex TEXT NOT NULL DEFAULT '',
            extra TEXT NOT NULL DEFAULT '{{}}',
            created_at TEXT NOT NULL DEFAULT {NOW},
            updated_at TEXT NOT NULL DEFAULT {NOW},
            UNIQUE (patient_id, issuer)
        );
        CREATE INDEX patients_name_key ON patients(name_key);

        CREATE TABLE procedures (
            pk INTEGER PRIMARY KEY,
            patient_pk INTEGER NOT NULL REFERENCES patients(pk),
            accession_number TEXT NOT NULL UNIQUE,
            requested_procedure_id TEXT NOT NULL,
            study_instance_uid TEXT NOT NULL UNIQUE,
            description TEXT NOT NULL DEFAULT '',
            code TEXT NOT NULL DEFAULT '',
            referring_physician TEXT NOT NULL DEFAULT '',
            requesting_physician TEXT NOT NULL DEFAULT '',
            priority TEXT NOT NULL DEFAULT '',
            extra TEXT NOT NULL DEFAULT '{{}}',
            created_at TEXT NOT NULL DEFAULT {NOW},
            updated_at TEXT NOT NULL DEFAULT {NOW}
        );
        CREATE INDEX procedures_patient ON procedures(patient_pk);

        CREATE TABLE steps (
            pk INTEGER PRIMARY KEY,
            procedure_pk INTEGER NOT NULL REFERENCES procedures(pk),
            sps_id TEXT NOT NULL,
            station_ae TEXT NOT NULL,
            station_name TEXT NOT NULL DEFAULT '',
            location TEXT NOT NULL DEFAULT '',
            modality TEXT NOT NULL,
            start_date TEXT NOT NULL,
            start_time TEXT NOT NULL,
            start_dt TEXT NOT NULL,
            performing_physician TEXT NOT NULL DEFAULT '',
            description TEXT NOT NULL DEFAULT '',
            protocol TEXT NOT NULL DEFAULT '[]',
            status TEXT NOT NULL DEFAULT 'SCHEDULED',
            extra TEXT NOT NULL DEFAULT '{{}}',
            created_at TEXT NOT NULL DEFAULT {NOW},
            updated_at TEXT NOT NULL DEFAULT {NOW},
            UNIQUE (procedure_pk, sps_id)
        );
        CREATE INDEX steps_start ON steps(start_dt);
        CREATE INDEX steps_station_start ON steps(station_ae, start_dt);
        CREATE INDEX steps_modality_start ON steps(modality, start_dt);
        CREATE INDEX steps_procedure ON steps(procedure_pk);
        CREATE INDEX steps_updated ON steps(updated_at);

        CREATE TABLE mpps (
            sop_instance_uid TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            calling_ae TEXT NOT NULL,
            station_ae TEXT NOT NULL DEFAULT '',
            modality TEXT NOT NULL DEFAULT '',
            unscheduled INTEGER NOT NULL DEFAULT 0,
            attributes TEXT NOT NULL,
            created_at TEXT NOT NULL DEFAULT {NOW},
            updated_at TEXT NOT NULL DEFAULT {NOW}
        );
        CREATE TABLE mpps_steps (
            mpps_uid TEXT NOT NULL REFERENCES mpps(sop_instance_uid),
            step_pk INTEGER NOT NULL REFERENCES steps(pk),
            PRIMARY KEY (mpps_uid, step_pk)
        );
        CREATE INDEX mpps_steps_step ON mpps_steps(step_pk);
        """,
    )
