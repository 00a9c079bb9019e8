"""Command line: ``python -m s9lib train ...`` (and the other subcommands below).

Why a thin CLI: everything here is a call into the library, so the CLI, the notebooks and the
tests exercise the same code. This module parses the arguments, calls the library and prints
one line (or one ``error:`` line, exit 2; Ctrl-C: one line, exit 130). Run
``python -m s9lib SUBCOMMAND --help`` for every flag.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import runtime
from .training.recipes import RECIPES

# Each subcommand registers itself here with @subcommand: name -> (help, shared options,
# add_arguments), where add_arguments(parser) adds its own flags and returns its runner.
_SUBCOMMANDS: dict = {}


def subcommand(name: str, help: str, shared: tuple[str, ...] = ()):
    def register(fn):
        _SUBCOMMANDS[name] = (help, shared, fn)
        return fn
    return register


def _shared_options() -> dict[str, argparse.ArgumentParser]:
    """The options several subcommands take, each defined once (argparse parent parsers)."""
    options = {name: argparse.ArgumentParser(add_help=False)
               for name in ("data", "device", "checkpoint", "fast")}
    options["data"].add_argument(
        "--data", default=None, help="CIFAR-10 source: a .tar.gz archive, an image folder "
        "(train|test/<class>/*) or a torchvision root [default: $S9LIB_DATA, else download "
        "into the user cache dir]")
    options["device"].add_argument(
        "--device", default=None,
        help="cuda, mps or cpu [default: the best available; $S9LIB_DEVICE]")
    options["checkpoint"].add_argument(
        "--checkpoint", default=None, help="a run's checkpoint.pt (or its folder) or an s9lib "
        "weights file [default: the shipped weights, s9lib.pretrained()]")
    options["fast"].add_argument(
        "--fast", action="store_true",
        help="FAST mode: tiny stratified subset, 1 epoch (same as S9LIB_FAST=1)")
    return options


@subcommand("train", "train the CIFAR ResNet18 with a named recipe (one process, or one per "
            "device under torchrun)", shared=("data", "device", "fast"))
def _train(parser: argparse.ArgumentParser):
    parser.add_argument("--recipe", default="course", help="training recipe: " + ", ".join(
        f"{k} ({v.epochs} epochs, {v.optimizer} lr {v.lr}, batch {v.batch_size}, "
        f"{v.data_path} data path)" for k, v in RECIPES.items()) + " [default: course]")
    parser.add_argument("--epochs", type=int, default=None,
                        help="number of epochs [default: the recipe's; 1 with S9LIB_FAST=1]")
    parser.add_argument("--out", default="runs/latest",
                        help="folder for checkpoint.pt and history.json [default: runs/latest]")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its checkpoint.pt")
    parser.add_argument("--init", default=None, metavar="CHECKPOINT",
                        help="start from the weights of a trained model (a run's checkpoint.pt "
                        "or folder, or a weights file) with a fresh optimizer and schedule "
                        "[default: random weights]")
    parser.add_argument("--force", action="store_true",
                        help="start afresh in an --out that already holds a run, replacing it")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers for the albumentations path "
                        "[default: 0 on CPU, up to 8 on a GPU]")
    parser.add_argument("--seed", type=int, default=None, help="random seed [default: the recipe's, 0]")
    parser.add_argument("--amp", default=None, choices=runtime.AMP_SETTINGS,
                        help="autocast: auto picks bf16 on GPUs and CPUs that compute it natively, "
                        "float32 elsewhere; off = float32 [default: $S9LIB_AMP, else auto]")
    parser.add_argument("--sync-bn", action="store_true",
                        help="under torchrun: BatchNorm statistics of the global batch, not of "
                        "each process's share (the recipe's sync_bn)")
    return _run_train


def _run_train(args) -> int:
    """Train with the recipe and flags of ``args``; print a one-line JSON summary."""
    from .training.recipes import RENAMED, get_recipe
    from .training.runs import train

    if args.recipe in RENAMED:  # the old spelling keeps working, with a notice
        print(f"notice: the recipe {args.recipe!r} is now called {RENAMED[args.recipe]!r}; "
              "using it.", file=sys.stderr)
        args.recipe = RENAMED[args.recipe]
    for flag, value, least in (("--epochs", args.epochs, 1), ("--seed", args.seed, 0),
                               ("--workers", args.workers, 0)):
        if value is not None and value < least:
            raise ValueError(f"{flag} must be at least {least}, got {value}.")
    if args.device is not None:
        runtime.check_device(args.device)
    runtime.fast_mode()  # a misspelt S9LIB_FAST fails here, not after loading the data
    overrides = {k: v for k, v in (("seed", args.seed), ("amp", args.amp),
                                   ("sync_bn", args.sync_bn or None)) if v is not None}
    history = train(get_recipe(args.recipe, **overrides), args.out, data=args.data,
                    epochs=args.epochs, resume=args.resume, force=args.force,
                    device=args.device, num_workers=args.workers, init=args.init)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports for the job
        return 0
    last = history.epochs[-1]
    print(json.dumps({"out": str(Path(args.out).resolve()), "epochs": len(history),
                      "test_acc": round(last.test_acc, 4),
                      "train_seconds": round(history.train_seconds, 1),
                      "device": history.device}))
    return 0


@subcommand("faithfulness", "Average Drop / Increase in Confidence of GradCAM, GradCAM++ "
            "and a random baseline", shared=("checkpoint", "data", "device", "fast"))
def _faithfulness(parser: argparse.ArgumentParser):
    parser.add_argument("--layer", default="layer4", help="layer to explain [default: layer4]")
    parser.add_argument("-n", type=int, default=500,
                        help="number of test images, stratified over the classes "
                        "[default: 500; at most 200 with --fast]")
    parser.add_argument("--methods", default="gradcam,gradcam++,random",
                        help="comma-separated: gradcam, gradcam++, random [default: all three]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baseline [default: 0]")
    parser.add_argument("--out", default=None, help="also write the report as JSON to this "
                        "file (a new file, or a report an earlier run wrote)")
    return _run_faithfulness


#: The JSON report ``faithfulness --out`` writes, marked ``"s9lib": "faithfulness report"``.
_REPORT = "faithfulness report"


def _run_faithfulness(args) -> int:
    import math

    from .checkpoints import load
    from .data.cifar import load_cifar10
    from .evaluate.faithfulness import faithfulness, format_report
    from .files import check_writable_file, json_kind, write_json

    if args.n < 1:
        raise ValueError(f"-n must be at least 1, got {args.n}.")
    if args.seed < 0:
        raise ValueError(f"--seed must be at least 0, got {args.seed}.")
    if args.out:  # before the model and the data are loaded and the work is done
        check_writable_file(args.out, "the report file --out", json_kind(_REPORT))
    model = load(args.checkpoint, device=args.device)
    test = load_cifar10(args.data).test
    per_class = min(math.ceil(args.n / len(set(test.labels.tolist()))),
                    int(test.class_counts().min()))
    test = test.subset(per_class)  # class-interleaved, so the first n are balanced
    report = faithfulness(model, test.images, test.labels, layer=args.layer,
                          methods=[m.strip() for m in args.methods.split(",") if m.strip()],
                          n=args.n, seed=args.seed)
    print(format_report(report))
    if args.out:
        write_json(args.out, report.to_dict(), json_kind(_REPORT), _REPORT)
    return 0


@subcommand("gradcam", "explain photos with GradCAM / GradCAM++: one PNG per image",
            shared=("checkpoint", "device"))
def _gradcam(parser: argparse.ArgumentParser):
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="photos (JPEG, PNG, TIFF, WebP, ...); each is centre-cropped to a "
                        "square and resized to 32x32")
    parser.add_argument("--layers", nargs="+", default=["layer1", "layer2", "layer3", "layer4"],
                        help="layers to explain; put the IMAGE arguments first, since this option "
                        "takes every name after it [default: layer1 layer2 layer3 layer4]")
    parser.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++"],
                        help="CAM method [default: gradcam]")
    parser.add_argument("--out", default="outputs",
                        help="folder for the PNGs, IMAGE-STEM_METHOD.png; a file there that "
                        "s9lib did not write is never replaced [default: outputs]")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="heatmap weight in the overlays, 0..1 [default: 0.5]")
    return _run_gradcam


def _run_gradcam(args) -> int:
    """One line per photo: the PNG written, or an ``error:`` line (then exit 2)."""
    from .checkpoints import load
    from .files import check_writable_folder
    from .show.reports import explain_photos

    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}.")
    out = check_writable_folder(args.out, "--out")  # before any work
    model = load(args.checkpoint, args.device)
    failed = 0
    for _, written, error in explain_photos(model, args.images, out, layers=args.layers,
                                            method=args.method, alpha=args.alpha):
        if error is not None:  # report it, go on with the others
            print(f"error: {' '.join(error.split())}", file=sys.stderr)
            failed += 1
        else:
            print(written, flush=True)
    return 2 if failed else 0


@subcommand("export", "write a run's model as an fp16 weights file with measured accuracies",
            shared=("data",))
def _export(parser: argparse.ArgumentParser):
    parser.add_argument("checkpoint", help="checkpoint.pt of a run (or its folder)")
    parser.add_argument("dest", help="weights file to write, e.g. s9lib/weights/resnet18_cifar10.pt")
    parser.add_argument("--exact", default=None,
                        help="an .npz of original-pixel test images (images, labels), e.g. "
                        "../shared/data/cifar10_test_exact_first1017.npz: its accuracy is "
                        "recorded too")
    parser.add_argument("--note", default="", help="free text stored with the weights")

    def run(args) -> int:
        from .checkpoints import export

        meta = export(args.checkpoint, args.dest, data=args.data, exact=args.exact,
                      note=args.note)
        print(json.dumps({k: meta[k] for k in ("test_acc", "exact_test_acc", "epochs", "device")
                          if k in meta}))
        return 0

    return run


def _after_interrupt(args) -> str:
    """What a Ctrl-C leaves, and how to go on from there."""
    if args.command != "train":
        return "every file reported as written is complete; nothing else was written."
    from .checkpoints import CHECKPOINT

    checkpoint = Path(args.out) / CHECKPOINT
    if not checkpoint.is_file() or not (args.resume or checkpoint.stat().st_mtime >= args.started):
        return "no epoch of this run had finished, so none was saved; run the same command again."
    flags = [("--recipe", args.recipe), ("--epochs", args.epochs), ("--data", args.data),
             ("--seed", args.seed), ("--amp", args.amp)]
    again = " ".join(f"{k} {v}" for k, v in flags if v is not None)
    fast = " --fast" if runtime.fast_mode() else ""
    return (f"the last finished epoch is saved; resume with: python -m s9lib train --resume "
            f"--out {args.out} {again}{fast}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s9lib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared, runners = _shared_options(), {}
    for name, (help_text, options, add) in _SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           parents=[shared[o] for o in options])
        runners[name] = add(p)
    args = parser.parse_args(argv)
    args.started = time.time()  # a checkpoint older than this is not this run's (--force)
    try:
        if getattr(args, "fast", False):
            os.environ["S9LIB_FAST"] = "1"
        return runners[args.command](args)
    except KeyboardInterrupt:
        print(f"error: interrupted; {_after_interrupt(args)}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as exc:  # OSError: a full or read-only disk
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line
        return 2


if __name__ == "__main__":
    sys.exit(main())
