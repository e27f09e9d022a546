"""``medlab data list | fetch NAME | verify NAME``: the data command line.

``list`` shows every source, its status on this machine and how to get it;
``fetch`` downloads the sources that have a public URL (and prints the manual
steps for the others); ``verify`` checks checksums where they are known and
otherwise that the files load.
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]

MANUAL = ("covid-radiography", "covid-qu-ex", "medseg-covid-ct", "mosmeddata")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``medlab data``."""
    p = argparse.ArgumentParser(prog="medlab data", description="List, download and check medlab's data sets.")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="every data source and its status on this machine")
    ls.add_argument("-v", "--verbose", action="store_true", help="also origin, licence, citation, layout, options")
    ls.add_argument("--root", default=None, help="look here instead of MEDLAB_DATA_DIR/<source>")
    fe = sub.add_parser("fetch", help="download a data source (where a public URL exists)")
    fe.add_argument("name", help="source name, e.g. medmnist:pneumoniamnist or pocus")
    fe.add_argument("--size", type=int, default=28, help="MedMNIST image size: 28, 64, 128 or 224 (3D flags: 28 or 64)")
    fe.add_argument("--root", default=None, help="download into this folder")
    fe.add_argument("--quiet", action="store_true", help="no progress bar")
    ve = sub.add_parser("verify", help="check a source's files (checksums, or that they load)")
    ve.add_argument("name")
    ve.add_argument("--root", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``medlab data`` with ``argv`` (without the leading ``data``); return the exit code.

    Exit codes: 0 success, 1 the data are missing, corrupt or could not be
    downloaded (the message says why and what to do), 2 bad usage.
    """
    return _main(argv)


def _main(argv):
    from ..errors import MedlabError
    from .download import data_dir
    from .sources import fetch_source, list_sources, source_info, verify_source

    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            print(f"data folder: {data_dir()} (set MEDLAB_DATA_DIR to change it)\n")
            rows = list_sources(args.root)
            width = max(len(r["name"]) for r in rows)
            for r in rows:
                fetchable = "fetch" if r["downloadable"] else "manual download" if r["name"] in MANUAL else ""
                print(f"{r['name']:<{width}}  {r['status']}" + (f"  [{fetchable}]" if fetchable else ""))
                print(f"{'':<{width}}  {r['title']}")
                if args.verbose:
                    for key in ("modality", "task", "origin", "licence", "citation", "how_to_get"):
                        print(f"{'':<{width}}  {key}: {r[key]}")
                    print(f"{'':<{width}}  layout:")
                    for line in r["layout"].splitlines():
                        print(f"{'':<{width}}    {line}")
                    if r["options"]:
                        print(f"{'':<{width}}  options: " + "; ".join(f"{k}: {v}" for k, v in r["options"].items()))
                    print()
            return 0
        if args.command == "fetch":
            info = source_info(args.name)
            paths = fetch_source(args.name, args.root, size=args.size, progress=not args.quiet)
            if not paths:
                print(f"{info.name}: nothing to download ({info.how_to_get})")
            for p in paths:
                print(f"fetched {p}")
            return 0
        if args.command == "verify":
            ok, message = verify_source(args.name, args.root)
            print(f"{args.name}: {'OK' if ok else 'FAILED'}: {message}")
            return 0 if ok else 1
    except MedlabError as exc:
        print(f"medlab data {args.command}: {exc}", file=sys.stderr)
        return 1
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
