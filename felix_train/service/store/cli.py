"""`felix-train users` (API users and their keys) and `felix-train db` (the schema's migrations)."""

from __future__ import annotations

import argparse
import sys

from felix_train.service.store.core import Store
from felix_train.service.store.engine import DATABASE_URL_ENV
from felix_train.service.store.errors import StoreError
from felix_train.service.store.migrate import head_revision, refuse_unknown, schema_revision, upgrade_schema


def _parser(prog: str, description: str) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The command's parser and the parent of its actions: `--home` and `--database-url` go before or after the action."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, help="$FELIX_HOME (default ~/.felix)")
    common.add_argument("--database-url", default=argparse.SUPPRESS,
                        help=f"SQLAlchemy URL (default ${DATABASE_URL_ENV}, else SQLite at $FELIX_HOME/felix.db)")
    parser = argparse.ArgumentParser(prog=prog, description=description, parents=[common])
    return parser, common


def _store_args(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(database URL, home) as given, before or after the action (None: not given)."""
    return getattr(args, "database_url", None), getattr(args, "home", None)


def users_main(argv: list[str] | None = None) -> int:
    """`felix-train users add NAME | rotate NAME | list`."""
    parser, common = _parser("felix-train users", "Manage API users.")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("add", parents=[common], help="create a user and print its API key (shown once)").add_argument("name")
    sub.add_parser("rotate", parents=[common],
                   help="give a user a new API key (the old one stops working)").add_argument("name")
    sub.add_parser("list", parents=[common], help="list users")
    args = parser.parse_args(argv)

    try:
        url, home = _store_args(args)
        store = Store(url, home=home)
    except StoreError as err:
        print(str(err), file=sys.stderr)
        return 1
    try:
        if args.action == "add":
            user, key = store.create_user(name=args.name)
            print(f"user {user.name!r} created (id {user.id}); its API key, shown only now:", file=sys.stderr)
            print(key)
        elif args.action == "rotate":
            print(store.rotate_key(name=args.name))
        else:
            for user in store.list_users():
                print(f"{user.id}\t{user.name}\t{user.created_at.isoformat(timespec='seconds')}")
        return 0
    except (ValueError, StoreError) as err:
        print(str(err), file=sys.stderr)
        return 1
    finally:
        store.close()


def db_main(argv: list[str] | None = None) -> int:
    """`felix-train db upgrade | current`: migrate the store's database, or say its schema revision."""
    parser, common = _parser("felix-train db", "The store's schema: Alembic migrations shipped with felix_train "
                                       "(`serve` and `worker` also upgrade on start).")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("upgrade", parents=[common], help="migrate the database to this felix_train's schema (creates it when empty)")
    sub.add_parser("current", parents=[common], help="print the database's schema revision and this felix_train's newest")
    args = parser.parse_args(argv)

    url, home = _store_args(args)
    store = Store(url, home=home, create=False)
    where = store.engine.url.render_as_string(hide_password=True)
    try:
        if args.action == "upgrade":
            before, after = upgrade_schema(store.engine)
            if before == after:
                print(f"{where}: already at revision {after} (head)")
            else:
                print(f"{where}: upgraded from {before or 'no revision'} to {after} (head)")
            return 0
        current, head = schema_revision(store.engine), head_revision()
        refuse_unknown(current, store.engine)
        state = ("head" if current == head else
                 "empty or made before migrations: `felix-train db upgrade`" if current is None else
                 f"behind {head}: `felix-train db upgrade`")
        print(f"{where}: revision {current or 'none'} ({state})")
        return 0
    except StoreError as err:
        print(str(err), file=sys.stderr)
        return 1
    finally:
        store.close()
