"""People and machines who use the web page: users, roles, API tokens, first-run setup.

There is no default password. While no active admin exists, the appliance issues a
one-time setup token (printed once to stderr by the web part at start); whoever holds
it may create the first admin on the web page ``/setup``. Passwords are hashed with
werkzeug's scrypt; API tokens are random and kept only as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations
from werkzeug.security import check_password_hash, generate_password_hash

from appliance import audit
from appliance.db import Store
from appliance.errors import Conflict, NotFound, ValidationError

ADMIN, FRONT_DESK = "admin", "frontdesk"
ROLES = (FRONT_DESK, ADMIN)
LANGUAGES = ("", "en", "ja")  # "" = the browser's language
MIN_PASSWORD = 10
MAX_PASSWORD = 256

# werkzeug's scrypt at its own cost (n = 2**15, r = 8, p = 1: about 0.1 s and 32 MiB a
# hash on the development machine). Each hash names its parameters, so a hash made at
# any cost verifies; only the test suite lowers it (tests/conftest.py), for its
# thousand logins.
PASSWORD_METHOD = "scrypt"


def hash_password(password: str) -> str:
    return generate_password_hash(password, method=PASSWORD_METHOD)


SETUP_KEY = "setup_token_sha256"
SECRET_KEY = "web_secret_key"
TOKEN_PREFIX = "apl_"
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"

migrations = Migrations("accounts")


@migrations(name="0001_users_tokens")
def _m0001(db: sqlite_utils.Database) -> None:
    db.execute(
        f"""CREATE TABLE users (
            pk INTEGER PRIMARY KEY,
            username TEXT NOT NULL UNIQUE COLLATE NOCASE,
            password_hash TEXT NOT NULL,
            role TEXT NOT NULL,
            language TEXT NOT NULL DEFAULT '',
            active INTEGER NOT NULL DEFAULT 1,
            session_epoch INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL DEFAULT {NOW},
            updated_at TEXT NOT NULL DEFAULT {NOW}
        )"""
    )
    db.execute(
        f"""CREATE TABLE api_tokens (
            pk INTEGER PRIMARY KEY,
            user_pk INTEGER NOT NULL REFERENCES users(pk),
            name TEXT NOT NULL,
            token_sha256 TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL DEFAULT {NOW},
            last_used_at TEXT NOT NULL DEFAULT ''
        )"""
    )


@dataclass(frozen=True)
class User:
    """A signed-in person or machine."""

    pk: int
    username: str
    role: str
    language: str
    active: bool
    session_epoch: int

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


def _user(row: dict[str, Any]) -> User:
    return User(
        pk=int(row["pk"]),
        username=row["username"],
        role=row["role"],
        language=row["language"],
        active=bool(row["active"]),
        session_epoch=int(row["session_epoch"]),
    )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- validation ------------------------------------------------------------


def validate_username(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValidationError("username", "is required")
    if not _USERNAME.match(value):
        raise ValidationError(
            "username",
            "must be 1-32 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return value


def validate_password(value: str, username: str = "", field: str = "password") -> str:
    if len(value) < MIN_PASSWORD:
        raise ValidationError(field, f"must be at least {MIN_PASSWORD} characters long")
    if len(value) > MAX_PASSWORD:
        raise ValidationError(field, f"must be at most {MAX_PASSWORD} characters long")
    if username and value.strip().casefold() == username.casefold():
        raise ValidationError(field, "must not be the user name")
    return value


def validate_role(value: str) -> str:
    if value not in ROLES:
        raise ValidationError("role", f"must be one of {', '.join(ROLES)}")
    return value


def validate_language(value: str) -> str:
    if value not in LANGUAGES:
        raise ValidationError("language", "must be en, ja or empty (the browser's language)")
    return value


# -- users -------------------------------------------------------------------


def create_user(
    store: Store,
    username: str,
    password: str,
    role: str = FRONT_DESK,
    language: str = "",
    actor: str = "system",
    source: str = "",
) -> int:
    """Add a user; raises ValidationError (field named) for bad input or a taken name."""
    username = validate_username(username)
    validate_password(password, username)
    validate_role(role)
    validate_language(language)
    with store.write() as db:
        if db.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
            raise ValidationError("username", "is already taken")
        cur = db.execute(
            "INSERT INTO users(username, password_hash, role, language) VALUES (?,?,?,?)",
            (username, hash_password(password), role, language),
        )
        audit.record(db, actor, "user-add", f"user {username}", f"role {role}", source)
    return int(cur.lastrowid or 0)


def get_user(store: Store, pk: int) -> User:
    rows = store.query("SELECT * FROM users WHERE pk = ?", (pk,))
    if not rows:
        raise NotFound(f"no user {pk}")
    return _user(rows[0])


def find_user(store: Store, username: str) -> User | None:
    rows = store.query("SELECT * FROM users WHERE username = ?", (username.strip(),))
    return _user(rows[0]) if rows else None


def list_users(store: Store) -> list[dict[str, Any]]:
    return store.query(
        """SELECT u.pk, u.username, u.role, u.language, u.active, u.created_at,
                  (SELECT count(*) FROM api_tokens t WHERE t.user_pk = u.pk) AS tokens
           FROM users u ORDER BY u.username"""
    )


# A hash to compare against when the user does not exist, so both paths cost the same;
# made at the first such login (not at import: every CLI command would pay for it).
_dummy_hashes: dict[str, str] = {}


def _dummy_hash() -> str:
    if PASSWORD_METHOD not in _dummy_hashes:
        _dummy_hashes[PASSWORD_METHOD] = hash_password(secrets.token_hex(16))
    return _dummy_hashes[PASSWORD_METHOD]


def authenticate(store: Store, username: str, password: str) -> User | None:
    """The active user with this name and password, else None."""
    rows = store.query("SELECT * FROM users WHERE username = ?", (username.strip(),))
    if not rows:
        check_password_hash(_dummy_hash(), password)
        return None
    row = rows[0]
    if not check_password_hash(row["password_hash"], password) or not row["active"]:
        return None
    return _user(row)


def has_admin(store: Store) -> bool:
    rows = store.query("SELECT 1 FROM users WHERE role = ? AND active = 1 LIMIT 1", (ADMIN,))
    return bool(rows)


def _active_admins(db: sqlite_utils.Database) -> int:
    return int(
        db.execute("SELECT count(*) FROM users WHERE role = ? AND active = 1", (ADMIN,)).fetchone()[
            0
        ]
    )


def set_password(
    store: Store, pk: int, password: str, actor: str = "system", source: str = ""
) -> None:
    """Change a password; every session of that user ends (its epoch moves on)."""
    user = get_user(store, pk)
    validate_password(password, user.username)
    with store.write() as db:
        db.execute(
            f"""UPDATE users SET password_hash = ?, session_epoch = session_epoch + 1,
                updated_at = {NOW} WHERE pk = ?""",
            (hash_password(password), pk),
        )
        audit.record(db, actor, "user-password", f"user {user.username}", "", source)


def end_sessions(store: Store, pk: int) -> None:
    """Sign a user out everywhere: a session cookie kept from before no longer opens a page."""
    with store.write() as db:
        db.execute("UPDATE users SET session_epoch = session_epoch + 1 WHERE pk = ?", (pk,))


def update_user(
    store: Store,
    pk: int,
    role: str,
    language: str,
    active: bool,
    actor: str = "system",
    source: str = "",
) -> None:
    """Change role, language, active; refuses to leave the box without an active admin."""
    user = get_user(store, pk)
    validate_role(role)
    validate_language(language)
    with store.write() as db:
        losing_admin = user.is_admin and user.active and (role != ADMIN or not active)
        if losing_admin and _active_admins(db) <= 1:
            raise Conflict("the last active admin cannot be demoted or deactivated")
        ends_sessions = (role != user.role) or (active != user.active)
        db.execute(
            f"""UPDATE users SET role = ?, language = ?, active = ?,
                session_epoch = session_epoch + ?, updated_at = {NOW} WHERE pk = ?""",
            (role, language, int(active), int(ends_sessions), pk),
        )
        audit.record(
            db,
            actor,
            "user-change",
            f"user {user.username}",
            f"role {role}, {'active' if active else 'inactive'}",
            source,
        )


def set_language(store: Store, pk: int, language: str) -> None:
    validate_language(language)
    with store.write() as db:
        db.execute(
            f"UPDATE users SET language = ?, updated_at = {NOW} WHERE pk = ?", (language, pk)
        )


# -- API tokens ----------------------------------------------------------------


def create_token(
    store: Store, user_pk: int, name: str, actor: str = "system", source: str = ""
) -> str:
    """A new API token for a user; the raw token is returned once and never stored."""
    user = get_user(store, user_pk)
    name = name.strip()
    if not name:
        raise ValidationError("token_name", "is required")
    if len(name) > 64:
        raise ValidationError("token_name", "is longer than 64 characters")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with store.write() as db:
        db.execute(
            "INSERT INTO api_tokens(user_pk, name, token_sha256) VALUES (?,?,?)",
            (user_pk, name, _sha256(raw)),
        )
        audit.record(db, actor, "token-add", f"user {user.username}", name, source)
    return raw


def list_tokens(store: Store, user_pk: int | None = None) -> list[dict[str, Any]]:
    sql = """SELECT t.pk, t.name, t.created_at, t.last_used_at, u.username, t.user_pk
             FROM api_tokens t JOIN users u ON u.pk = t.user_pk"""
    if user_pk is None:
        return store.query(sql + " ORDER BY t.pk")
    return store.query(sql + " WHERE t.user_pk = ? ORDER BY t.pk", (user_pk,))


def revoke_token(store: Store, token_pk: int, actor: str = "system", source: str = "") -> None:
    with store.write() as db:
        row = db.execute("SELECT name FROM api_tokens WHERE pk = ?", (token_pk,)).fetchone()
        if row is None:
            raise NotFound(f"no token {token_pk}")
        db.execute("DELETE FROM api_tokens WHERE pk = ?", (token_pk,))
        audit.record(db, actor, "token-revoke", f"token {token_pk}", row[0], source)


def user_for_token(store: Store, raw: str) -> User | None:
    """The active user owning this API token, else None."""
    if not raw.startswith(TOKEN_PREFIX):
        return None
    rows = store.query(
        """SELECT u.*, t.pk AS token_pk, t.last_used_at FROM api_tokens t
           JOIN users u ON u.pk = t.user_pk WHERE t.token_sha256 = ?""",
        (_sha256(raw),),
    )
    if not rows or not rows[0]["active"]:
        return None
    with store.write() as db:
        db.execute(
            f"UPDATE api_tokens SET last_used_at = {NOW} WHERE pk = ?", (rows[0]["token_pk"],)
        )
    return _user(rows[0])


# -- first-run setup -------------------------------------------------------------


def issue_setup_token(store: Store) -> str | None:
    """While no active admin exists: a fresh one-time setup token (replacing any older one)."""
    if has_admin(store):
        return None
    raw = secrets.token_urlsafe(18)
    with store.write() as db:
        db.execute(
            "INSERT OR REPLACE INTO settings(key, value) VALUES (?, ?)", (SETUP_KEY, _sha256(raw))
        )
    return raw


def setup_pending(store: Store) -> bool:
    return not has_admin(store)


def complete_setup(
    store: Store, token: str, username: str, password: str, language: str = "", source: str = ""
) -> int:
    """Create the first admin with the one-time token; the token is used up."""
    username = validate_username(username)
    validate_password(password, username)
    validate_language(language)
    with store.write() as db:
        row = db.execute("SELECT value FROM settings WHERE key = ?", (SETUP_KEY,)).fetchone()
        if _active_admins(db) > 0 or row is None:
            raise Conflict("the appliance is already set up")
        if not hmac.compare_digest(row[0], _sha256(token.strip())):
            raise ValidationError("token", "is not the setup token printed at start")
        if db.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
            raise ValidationError("username", "is already taken")
        cur = db.execute(
            "INSERT INTO users(username, password_hash, role, language) VALUES (?,?,?,?)",
            (username, hash_password(password), ADMIN, language),
        )
        db.execute("DELETE FROM settings WHERE key = ?", (SETUP_KEY,))
        audit.record(db, username, "setup", f"user {username}", "first admin created", source)
    return int(cur.lastrowid or 0)


def secret_key(store: Store) -> str:
    """The key that signs web sessions: made once, kept in the database (never in the repo)."""
    with store.write() as db:
        row = db.execute("SELECT value FROM settings WHERE key = ?", (SECRET_KEY,)).fetchone()
        if row:
            return str(row[0])
        key = secrets.token_hex(32)
        db.execute("INSERT INTO settings(key, value) VALUES (?, ?)", (SECRET_KEY, key))
        return key
