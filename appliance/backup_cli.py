"""``appliance backup FILE`` (while serving) and ``appliance restore FILE`` (stopped)."""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance import audit, backup
from appliance import config as config_mod
from appliance.cliargs import EXIT_CONFIG, EXIT_OK, Context, Handler, load_config
from appliance.config import ENV_CONFIG


def register(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> dict[str, Handler]:
    """Add the ``backup`` and ``restore`` commands."""
    b = sub.add_parser(
        "backup",
        help="write a .tar.gz of the database, the data folder and --config (may run while serving)",
    )
    add_common(b)
    b.add_argument("file", type=Path, metavar="FILE", help="the archive to write (.tar.gz)")
    b.add_argument("--spool", action="store_true", help="include the forward spool's images")
    r = sub.add_parser(
        "restore", help="put a backup back into the data folder (the appliance must be stopped)"
    )
    add_common(r)
    r.add_argument("file", type=Path, metavar="FILE", help="an archive written by backup")
    r.add_argument(
        "--force",
        action="store_true",
        help="restore into a data folder that is not empty (its entries move to "
        "DATA_DIR/before-restore-TIMESTAMP/)",
    )
    r.add_argument(
        "--restore-config",
        action="store_true",
        help="also write the backup's configuration file over --config FILE",
    )
    return {"backup": cmd_backup, "restore": cmd_restore}


def cmd_backup(args: argparse.Namespace, ctx: Context) -> int:
    """Write the archive next to its final name, readable by this user only, then rename."""
    cfg = load_config(args)
    config_file = args.config or (
        Path(os.environ[ENV_CONFIG]) if os.environ.get(ENV_CONFIG) else None
    )
    target: Path = args.file
    tmp = target.with_name(target.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise backup.BackupError(f"cannot write {target}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            summary = backup.create(cfg.data_dir, f, config_file=config_file, spool=args.spool)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    rows = sum(summary.tables.values())
    # In the audit log (after the snapshot: it is not in this backup), and so on the
    # health page as the last backup.
    store = ctx.open_store(cfg.data_dir)
    try:
        audit.record_now(
            store, "cli", "backup", str(target.resolve()),
            f"{rows} rows, {summary.files} files, {summary.bytes} bytes"
            f"{', spool' if args.spool else ''}",
        )  # fmt: skip
    finally:
        store.close()
    print(
        f"{target}: database ({len(summary.tables)} tables, {rows} rows), {summary.files} files "
        f"({summary.bytes} bytes){', spool' if args.spool else ''}"
        f"{', configuration' if config_file else ''}"
    )
    return EXIT_OK


def cmd_restore(args: argparse.Namespace, _ctx: Context) -> int:
    """Refused while the appliance runs; see ``backup.restore``. With ``--restore-config``
    the settings (data_dir, ports) come from the backup's configuration file."""
    if args.restore_config and args.config is None:
        print("appliance: --restore-config needs --config FILE", file=sys.stderr)
        return EXIT_CONFIG
    if args.restore_config:
        raw = tomllib.loads(backup.read_config(args.file))
        cfg = config_mod.with_overrides(
            config_mod.from_mapping(raw),
            data_dir=args.data_dir,
            dicom_port=args.dicom_port,
            dicom_tls_port=args.dicom_tls_port,
            web_port=args.web_port,
        )
    else:
        cfg = load_config(args)
    summary = backup.restore(
        args.file, cfg, config_target=args.config if args.restore_config else None, force=args.force
    )
    rows = sum(summary.tables.values())
    print(
        f"restored {args.file} into {cfg.data_dir}: database ({rows} rows), "
        f"{summary.files} files{', configuration to ' + str(args.config) if summary.config else ''}"
    )
    return EXIT_OK
