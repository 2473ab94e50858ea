"""``mktsframe token add|list|revoke``: the access tokens of a data root (see docs/security.md).

Run on the server's machine, by whoever may read and write the root (managing tokens is the
admin's job and is not offered over the network). ``add`` prints the new token once; only its
hash is stored. A running server sees additions and revocations at its next request.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

__all__ = ["add_token_commands"]


def add_token_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``token add|list|revoke`` on the ``mktsframe`` command's subparsers."""
    p = sub.add_parser("token", help="manage access tokens (auth: true): add, list, revoke")
    tsub = p.add_subparsers(dest="token_command", required=True)
    add = tsub.add_parser("add", help="create a token for NAME and print it (once)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=("read", "write", "admin"),
                     help="read: queries and streams; write: also writes, creates, deletes; admin: also destroy")
    lst = tsub.add_parser("list", help="names and roles (never the tokens)")
    rev = tsub.add_parser("revoke", help="remove NAME's token (a running server refuses it at once)")
    rev.add_argument("name")
    for q in (add, lst, rev):
        q.add_argument("--config", "-c", metavar="FILE", help="the server's mkts.yml (its root_directory)")
        q.add_argument("--root", metavar="DIR", help="the data root (default: the config's, $MKTS_ROOT or data/)")
    add.set_defaults(func=_add)
    lst.set_defaults(func=_list)
    rev.set_defaults(func=_revoke)


def _store(args: argparse.Namespace):
    from mktsframe.config import default_root, load_config
    from mktsframe.server.auth import TokenStore

    if args.root:
        root = Path(args.root).expanduser()
    elif args.config:
        root = load_config(args.config).root_path()
    else:
        root = default_root()
    return TokenStore(root)


def _add(args: argparse.Namespace) -> int:
    from mktsframe.server.auth import Role

    store = _store(args)
    try:
        token = store.add(args.name, Role.parse(args.role))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    print(f"token {args.name!r} ({args.role}) stored in {store.path}; it is shown only now. Use it as "
          f"http://{args.name}:TOKEN@host:5993/rpc (pymarketstore), MKTS_TOKEN=TOKEN or connect(url, token=...)",
          file=sys.stderr)  # fmt: skip
    return 0


def _list(args: argparse.Namespace) -> int:
    rows = _store(args).list()
    if not rows:
        print("no tokens")
    for r in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["created"]))
        print(f"{r['name']:<24} {r['role']:<6} created {created} UTC")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    if _store(args).revoke(args.name):
        print(f"revoked {args.name!r}")
        return 0
    print(f"error: no token named {args.name!r}", file=sys.stderr)
    return 1
