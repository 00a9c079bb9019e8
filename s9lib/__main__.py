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
from .training.recipes import RECIPES

# Each subcommand registers itself here with @subcommand: name -> (help, add_arguments),
# where add_arguments(parser) adds its flags and returns the function that runs it.
_SUBCOMMANDS: dict = {}


def subcommand(name: str, help: str):
    def register(fn):
        _SUBCOMMANDS[name] = (help, fn)
        return fn
    return register


@subcommand("train", "train the CIFAR ResNet18 with a named recipe (one process, or one per "
            "device under torchrun)")
def _train(parser: argparse.ArgumentParser):
    parser.add_argument("--recipe", default="course", help="training recipe: " + ", ".join(
        f"{k} ({v.epochs} epochs, {v.optimizer} lr {v.lr}, batch {v.batch_size}, "
        f"{v.data_path} data path)" for k, v in RECIPES.items()) + " [default: course]")
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
    parser.add_argument("--force", action="store_true",
                        help="start afresh in an --out that already holds a run, replacing it")
    parser.add_argument("--device", default=None,
                        help="cuda, mps or cpu [default: the best available; $S9LIB_DEVICE]")
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
    parser.add_argument("--fast", action="store_true",
                        help="FAST mode: tiny stratified subset, 1 epoch (same as S9LIB_FAST=1)")

    return _run_train


def _run_train(args) -> int:
    """Train with the recipe and flags of ``args``; print a one-line JSON summary."""
    import os

    if args.fast:
        os.environ["S9LIB_FAST"] = "1"
    from .data.cifar import load_cifar10
    from .models import ResNet18
    from .training.recipes import get_recipe
    from .training.loop import fit

    _check_train_args(args)
    overrides = {k: v for k, v in (("seed", args.seed), ("amp", args.amp),
                                   ("sync_bn", args.sync_bn or None)) if v is not None}
    recipe = get_recipe(args.recipe, **overrides)
    data = load_cifar10(args.data)
    runtime.seed_everything(recipe.seed)
    model = ResNet18(num_classes=len(data.classes))
    history = fit(model, data, recipe, epochs=args.epochs, out=args.out, resume=args.resume,
                  device=args.device, num_workers=args.workers)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports for the job
        return 0
    last = history.epochs[-1]
    print(json.dumps({"out": str(Path(args.out).resolve()), "epochs": len(history),
                      "test_acc": round(last.test_acc, 4),
                      "train_seconds": round(history.train_seconds, 1),
                      "device": history.device}))
    return 0


def _check_train_args(args) -> None:
    """Every check that needs no data and no model, before the data set is decoded.

    Every rank of a torchrun job runs these on the same files and flags, so they agree.
    """
    from .checkpoints import CHECKPOINT
    from .files import check_writable_folder
    from .training.history import HISTORY

    for flag, value, least in (("--epochs", args.epochs, 1), ("--seed", args.seed, 0),
                               ("--workers", args.workers, 0)):
        if value is not None and value < least:
            raise ValueError(f"{flag} must be at least {least}, got {value}.")
    if args.device is not None:
        runtime.check_device(args.device)
    runtime.fast_mode()  # a misspelt S9LIB_FAST fails here, not after loading the data
    out = Path(args.out)
    if args.resume and args.force:
        raise ValueError("--resume and --force contradict each other; pass one of them.")
    if args.resume and not (out / CHECKPOINT).is_file():
        raise ValueError(f"Nothing to resume: no {CHECKPOINT} in {out}. Drop --resume to "
                         "start a fresh run there, or pass the --out of the run to continue.")
    found = [n for n in (CHECKPOINT, HISTORY) if (out / n).is_file()]
    if found and not (args.resume or args.force):
        raise ValueError(f"{out} already holds a run ({_describe_run(out, found)}); pass "
                         "--resume to continue it, or another --out (or --force to replace "
                         "it).")
    check_writable_folder(out, "--out")


def _describe_run(out: Path, found: list[str]) -> str:
    """'history.json: 3 of 60 epochs, recipe course' (or just the files) for a refusal."""
    from .training.history import HISTORY, History

    try:
        h = History.load(out / HISTORY)
        planned = h.info.get("epochs_planned", "?")
        return (f"{', '.join(found)}: {len(h)} of {planned} epochs, recipe "
                f"{(h.recipe or {}).get('name', '?')}")
    except (OSError, ValueError, KeyError, TypeError):
        return ", ".join(found)


@subcommand("faithfulness", "Average Drop / Increase in Confidence of GradCAM, GradCAM++ "
            "and a random baseline")
def _faithfulness(parser: argparse.ArgumentParser):
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint.pt (or its run folder) to evaluate "
                        "[default: the shipped weights, s9lib.pretrained()]")
    parser.add_argument("--layer", default="layer4", help="layer to explain [default: layer4]")
    parser.add_argument("-n", type=int, default=500,
                        help="number of test images, stratified over the classes "
                        "[default: 500; at most 200 with --fast]")
    parser.add_argument("--methods", default="gradcam,gradcam++,random",
                        help="comma-separated: gradcam, gradcam++, random [default: all three]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baseline [default: 0]")
    parser.add_argument("--data", default=None,
                        help="CIFAR-10 source (archive, image folder or torchvision root) "
                        "[default: $S9LIB_DATA, else the user cache dir]")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu [default: the best available]")
    parser.add_argument("--out", default=None, help="also write the report as JSON to this file")
    parser.add_argument("--fast", action="store_true", help="FAST mode data (same as S9LIB_FAST=1)")

    def run(args) -> int:
        import math
        import os

        if args.fast:
            os.environ["S9LIB_FAST"] = "1"
        from .data.cifar import load_cifar10
        from .evaluate.faithfulness import faithfulness, format_report

        from .checkpoints import load
        from .files import atomic_write

        _check_faithfulness_args(args)
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
            text = json.dumps(report.to_dict(), indent=1) + "\n"
            atomic_write(args.out, lambda f: f.write(text.encode()))
        return 0

    return run


def _check_faithfulness_args(args) -> None:
    """The flags' checks, before the model and the data are loaded and the work is done."""
    from .files import check_writable_file

    if args.n < 1:
        raise ValueError(f"-n must be at least 1, got {args.n}.")
    if args.seed < 0:
        raise ValueError(f"--seed must be at least 0, got {args.seed}.")
    if args.out:
        check_writable_file(args.out, "the report file --out")


@subcommand("gradcam", "explain photos with GradCAM / GradCAM++: one PNG per image")
def _gradcam(parser: argparse.ArgumentParser):
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="photos (JPEG, PNG, TIFF, WebP, ...); each is centre-cropped to a "
                        "square and resized to 32x32")
    parser.add_argument("--checkpoint", default=None,
                        help="a run's checkpoint.pt (or its folder) or an s9lib weights file "
                        "[default: the shipped weights, s9lib.pretrained()]")
    parser.add_argument("--layers", nargs="+", default=["layer1", "layer2", "layer3", "layer4"],
                        help="layers to explain; put the IMAGE arguments first, since this option "
                        "takes every name after it [default: layer1 layer2 layer3 layer4]")
    parser.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++"],
                        help="CAM method [default: gradcam]")
    parser.add_argument("--out", default="outputs",
                        help="folder for the PNGs, IMAGE-STEM_METHOD.png [default: outputs]")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="heatmap weight in the overlays, 0..1 [default: 0.5]")
    parser.add_argument("--device", default=None,
                        help="cuda, mps or cpu [default: the best available]")

    def run(args) -> int:
        from .checkpoints import load

        if not 0.0 <= args.alpha <= 1.0:
            raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}.")
        from .files import check_writable_folder

        out = check_writable_folder(args.out, "--out")  # before any work
        model = load(args.checkpoint, args.device)
        photos, failed = _load_photos(args.images)
        used: set[str] = set()
        for start in range(0, len(photos), 32):
            for path in _explain_photos(model, photos[start:start + 32], args, out, used):
                print(path)
        return 2 if failed else 0

    return run


def _load_photos(names: list[str]) -> tuple[list, int]:
    """(path, uint8 photo) for each readable file; an error line for each other one."""
    from .data.photos import load_image

    photos, failed = [], 0
    for name in names:
        try:
            photos.append((Path(name), load_image(name, min_side=512)))  # JPEG draft
        except (ValueError, FileNotFoundError) as exc:  # report it, go on with the others
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    return photos, failed


def _explain_photos(model, chunk: list, args, out: Path, used: set[str]) -> list[Path]:
    """One batched CAM call for ``chunk``, one report PNG per photo; returns the paths."""
    from .explain.cam import explain
    from .data.cifar import CLASSES
    from .data.photos import center_crop_box, to_cifar
    from .data.inputs import preprocess
    from .show.viz import gradcam_report

    crops = [to_cifar(photo) for _, photo in chunk]
    result = explain(model, preprocess(crops, model=model), layers=args.layers,
                     method=args.method).cpu()
    written = []
    for i, ((path, photo), crop) in enumerate(zip(chunk, crops)):
        fig = gradcam_report(photo, crop, result, i, args.layers, CLASSES,
                             crop_box=center_crop_box(*photo.shape[:2]), name=path.name,
                             alpha=args.alpha)
        stem, n = f"{path.stem}_{args.method.replace('++', 'pp')}", 1
        while stem + (f"-{n}" if n > 1 else "") in used:  # the same file name twice
            n += 1
        stem += f"-{n}" if n > 1 else ""
        used.add(stem)
        fig.savefig(out / f"{stem}.png", dpi=100)
        written.append(out / f"{stem}.png")
    return written


@subcommand("export", "write a run's model as an fp16 weights file with measured accuracies")
def _export(parser: argparse.ArgumentParser):
    parser.add_argument("checkpoint", help="checkpoint.pt of a run (or its folder)")
    parser.add_argument("dest", help="weights file to write, e.g. s9lib/weights/resnet18_cifar10.pt")
    parser.add_argument("--data", default=None,
                        help="CIFAR-10 source for the test accuracy [default: $S9LIB_DATA]")
    parser.add_argument("--exact", default=None,
                        help="an .npz of original-pixel test images (images, labels), e.g. "
                        "../shared/data/cifar10_test_exact_first1017.npz: its accuracy is "
                        "recorded too")
    parser.add_argument("--note", default="", help="free text stored with the weights")

    def run(args) -> int:
        import torch

        from .checkpoints import check_weights_dest, model_from_weights, weights_blob
        from .files import atomic_write

        # Everything is read, checked and measured first; the destination is written last,
        # once, atomically: a failing export leaves the old file as it was.
        dest = check_weights_dest(args.checkpoint, args.dest)
        blob = weights_blob(args.checkpoint, note=args.note)
        model = model_from_weights(blob, args.checkpoint, device="cpu")  # fp16 values, as shipped
        exact = _read_exact(args.exact) if args.exact else None
        measured = _measure_export(model, args.data, exact)
        blob["meta"].update(measured)
        atomic_write(dest, lambda f: torch.save(blob, f))
        meta = blob["meta"]
        print(json.dumps({k: meta[k] for k in ("test_acc", "exact_test_acc", "epochs", "device")
                          if k in meta}))
        return 0

    return run


def _read_exact(path: str) -> tuple:
    """(images, labels) of an ``--exact`` .npz, or one sentence saying what is wrong with it."""
    import numpy as np

    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError) as exc:  # missing, a folder, not an .npz
        why = getattr(exc, "strerror", None) or "numpy cannot read it as an .npz archive"
        raise ValueError(f"--exact {path} is not a readable .npz file ({why}); pass one with "
                         "images and labels arrays.") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"--exact {path} is a single .npy array; pass an .npz with images "
                         "and labels arrays.")
    with npz:
        missing = [k for k in ("images", "labels") if k not in npz.files]
        if missing:
            raise ValueError(f"--exact {path} has no {' or '.join(missing)} array (it has "
                             f"{', '.join(npz.files) or 'none'}); pass an .npz with images "
                             "(N, 32, 32, 3) uint8 and labels (N,).")
        images, labels = npz["images"], npz["labels"]
    if images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8 or len(labels) != len(images):
        raise ValueError(f"--exact {path}: images {images.shape} {images.dtype} and labels "
                         f"{labels.shape}; expected (N, 32, 32, 3) uint8 and (N,).")
    return images, labels


def _measure_export(model, data: str | None, exact: tuple | None) -> dict:
    """The accuracies an export records: CIFAR-10's test split and, optionally, ``exact``."""
    import torch

    from .inference import predict_logits
    from .data.cifar import load_cifar10

    tta = bool((model.meta.get("recipe") or {}).get("tta_flip"))  # as the run evaluated

    def accuracy(images, labels) -> float:
        logits = predict_logits(model, images, device=torch.device("cpu"), tta_flip=tta,
                         dtype=None)  # float32: the same on every machine
        return round(float((logits.argmax(1) == labels).mean()), 4)

    test = load_cifar10(data, fast=False).test
    measured = {"test_acc": accuracy(test.images, test.labels), "test_images": len(test),
                "tta_flip": tta, "eval_dtype": "float32"}
    if exact is not None:
        measured["exact_test_acc"] = accuracy(*exact)
        measured["exact_test_images"] = int(len(exact[1]))
    return measured


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
    except (ValueError, TypeError, OSError) as exc:  # OSError: a disk full, a path under a file
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line
        return 2


if __name__ == "__main__":
    sys.exit(main())
