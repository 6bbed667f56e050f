"""``appliance users ...``: list users, add one, set a password, issue a setup token.

For the admin who lost the password: ``appliance users set-password admin`` on the box
(stop nothing; the database is shared safely). Passwords are read from the terminal
without echo, or from standard input with ``--password-stdin`` (one line).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import Any

from appliance import accounts
from appliance.cliargs import Context, Handler, load_config
from appliance.errors import ApplianceError, ValidationError


def register(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> dict[str, Handler]:
    """Add the ``users`` command and its actions."""
    users = sub.add_parser("users", help="web users: list, add, set a password, setup token")
    actions = users.add_subparsers(dest="users_command", metavar="ACTION")
    lst = actions.add_parser("list", help="list users")
    add_common(lst)
    add = actions.add_parser("add", help="add a user")
    add_common(add)
    add.add_argument("username")
    add.add_argument("--role", choices=accounts.ROLES, default=accounts.FRONT_DESK)
    add.add_argument("--language", choices=("en", "ja"), default=None)
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    pw = actions.add_parser("set-password", help="set a user's password (and reactivate it)")
    add_common(pw)
    pw.add_argument("username")
    pw.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    tok = actions.add_parser(
        "setup-token", help="print a new one-time setup token (only while no admin exists)"
    )
    add_common(tok)
    return {"users": run}


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("New password: ")
    if first != getpass.getpass("Again: "):
        raise ValidationError("password", "the two passwords differ")
    return first


def run(args: argparse.Namespace, ctx: Context) -> int:
    if args.users_command not in ("list", "add", "set-password", "setup-token"):
        print(
            "usage: appliance users {list | add NAME | set-password NAME | setup-token}",
            file=sys.stderr,
        )
        return 2
    store = ctx.open_store(load_config(args).data_dir)
    try:
        if args.users_command == "list":
            for u in accounts.list_users(store):
                state = "active" if u["active"] else "inactive"
                print(f"{u['username']:<24} {u['role']:<10} {state:<9} {u['language'] or '-'}")
            return 0
        if args.users_command == "setup-token":
            token = accounts.issue_setup_token(store)
            if token is None:
                print("an admin exists; use 'appliance users set-password NAME'", file=sys.stderr)
                return 1
            print(token)
            return 0
        if args.users_command == "add":
            accounts.create_user(
                store, args.username, _password(args), args.role, args.language or "", actor="cli"
            )
            print(f"user {args.username} added ({args.role})")
            return 0
        user = accounts.find_user(store, args.username)
        if user is None:
            print(f"appliance: no user {args.username!r}", file=sys.stderr)
            return 1
        accounts.set_password(store, user.pk, _password(args), actor="cli")
        if not user.active:
            accounts.update_user(store, user.pk, user.role, user.language, True, actor="cli")
        print(f"password of {user.username} set; their sessions have ended")
        return 0
    except ApplianceError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
