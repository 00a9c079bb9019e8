"""Command line: ``python -m s9lib train ...`` (and the other subcommands below).

Why a thin CLI: everything here is a call into the library, so the CLI, the notebooks and the
tests exercise the same code. Run ``python -m s9lib SUBCOMMAND --help`` for every flag.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import runtime
from .train import RECIPES

# Each subcommand module registers itself here: name -> (add_arguments, run).
_SUBCOMMANDS: dict = {}


def subcommand(name: str, help: str):
    def register(fn):
        _SUBCOMMANDS[name] = (help, fn)
        return fn
    return register


@subcommand("train", "train the CIFAR ResNet18 with a named recipe")
def _train(parser: argparse.ArgumentParser):
    parser.add_argument("--recipe", default="seed", help="training recipe: " + ", ".join(
        f"{k} ({v.epochs} epochs, {v.optimizer} lr {v.lr}, batch {v.batch_size}, "
        f"{v.data_path} data path)" for k, v in RECIPES.items()) + " [default: seed]")
    parser.add_argument("--epochs", type=int, default=None,
                        help="number of epochs [default: the recipe's; 1 with S9LIB_FAST=1]")
    parser.add_argument("--data", default=None,
                        help="CIFAR-10 source: a .tar.gz archive, an image folder "
                        "(train|test/<class>/*) or a torchvision root "
                        "[default: $S9LIB_DATA, else download into the user cache dir]")
    parser.add_argument("--out", default="runs/latest",
                        help="folder for checkpoint.pt and history.json [default: runs/latest]")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its checkpoint.pt")
    parser.add_argument("--device", default=None,
                        help="cuda, mps or cpu [default: the best available; $S9LIB_DEVICE]")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers for the albumentations path "
                        "[default: 0 on CPU, up to 8 on a GPU]")
    parser.add_argument("--seed", type=int, default=None, help="random seed [default: the recipe's, 0]")
    parser.add_argument("--fast", action="store_true",
                        help="FAST mode: tiny stratified subset, 1 epoch (same as S9LIB_FAST=1)")

    def run(args) -> int:
        import os

        if args.fast:
            os.environ["S9LIB_FAST"] = "1"
        from .data import load_cifar10
        from .models import ResNet18
        from .train import fit, get_recipe

        recipe = get_recipe(args.recipe, **({"seed": args.seed} if args.seed is not None else {}))
        data = load_cifar10(args.data)
        runtime.seed_everything(recipe.seed)
        model = ResNet18(num_classes=len(data.classes))
        history = fit(model, data, recipe, epochs=args.epochs, out=args.out, resume=args.resume,
                      device=args.device, num_workers=args.workers)
        last = history.epochs[-1]
        print(json.dumps({"out": str(Path(args.out).resolve()), "epochs": len(history),
                          "test_acc": round(last.test_acc, 4),
                          "train_seconds": round(history.train_seconds, 1),
                          "device": history.device}))
        return 0

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s9lib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runners = {}
    for name, (help_text, add) in _SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        runners[name] = add(p)
    args = parser.parse_args(argv)
    try:
        return runners[args.command](args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
