"""The ``edgeinc`` command: a thin layer over the Python API (each command calls one function)."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

# Not a terminal (CI logs, pipes): wide enough that tables never wrap their figures.
console = Console() if sys.stdout.isatty() else Console(width=200)


class UserError(Exception):
    """An error the user can fix; printed without a traceback, exit status 2."""


def cmd_models(args: argparse.Namespace) -> int:
    from .models.summary import summarize_all

    rows = summarize_all(num_classes=args.num_classes)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    table = Table(title=f"edgeinc models (computed from the modules, {args.num_classes} classes)")
    for col in ("model", "input", "params", "params +aux", "multiply-adds", "grids", "paper top-1"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(
            r.name,
            f"{r.input_size}x{r.input_size}",
            f"{r.params:,}",
            f"{r.params_with_aux:,}",
            f"{r.macs / 1e9:.2f} G",
            " -> ".join(map(str, r.grids)),
            f"{r.paper_top1:.1f}%" if r.paper_top1 is not None else "-",
        )
    console.print(table)
    console.print("params +aux: with the BN-auxiliary head (training only); paper top-1: Table 2, ImageNet.")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return cmd_models(argparse.Namespace(json=False, num_classes=1000))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeinc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="table of the registered Inception-v3 variants")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--num-classes", type=int, default=1000)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("demo", help="the main job on the embedded default (what `make demo` runs)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, ValueError, FileNotFoundError) as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
