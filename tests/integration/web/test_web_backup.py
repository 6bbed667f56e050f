"""Admin -> Backup: the page, the download (a restorable archive), admins only, audited."""

from __future__ import annotations

import io
import json
import tarfile

from flask.testing import FlaskClient

from appliance import backup
from tests.webclient import Web


def test_backup_page_links_the_download(admin: FlaskClient) -> None:
    page = admin.get("/admin/backup")
    assert page.status_code == 200
    assert 'id="backup-download" href="/admin/backup.tar.gz"' in page.text


def test_download_is_an_archive_of_the_database_and_is_audited(
    admin: FlaskClient, web: Web
) -> None:
    prints = web.runtime.config.data_dir / "prints" / "jobs"
    prints.mkdir(parents=True)
    (prints / "page-1.png").write_bytes(b"\x89PNG fake")
    resp = admin.get("/admin/backup.tar.gz")
    assert resp.status_code == 200
    assert resp.mimetype == "application/gzip"
    assert "attachment" in resp.headers["Content-Disposition"]
    with tarfile.open(fileobj=io.BytesIO(resp.data), mode="r:gz") as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile(backup.MANIFEST).read())  # type: ignore[union-attr]
    assert f"data/{backup.DB_FILENAME}" in names
    assert "data/prints/jobs/page-1.png" in names
    assert backup.CONFIG not in names and manifest["spool"] is False
    assert manifest["tables"]["users"] == web.count("users")
    rows = web.store.query(
        "SELECT actor, action, detail FROM audit WHERE action = 'backup-download'"
    )
    assert len(rows) == 1 and rows[0]["actor"] == "admin"
    assert rows[0]["detail"].startswith(f"{sum(manifest['tables'].values())} rows, 1 files, ")
    # The scratch file is gone: nothing is left behind in the backups folder.
    assert not [p for p in (web.runtime.config.data_dir / "backups").iterdir() if p.is_file()]


def test_front_desk_and_anonymous_get_no_backup(desk: FlaskClient, web: Web) -> None:
    assert desk.get("/admin/backup").status_code == 403
    assert desk.get("/admin/backup.tar.gz").status_code == 403
    anonymous = web.client().get("/admin/backup.tar.gz")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    assert web.count("audit", "action = 'backup-download'") == 0
