"""Handlers for ``medxfer import medmnist|folder`` and ``medxfer preprocess``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medxfer import storage
from medxfer.cli.arguments import add_config_args
from medxfer.config.loading import load_config
from medxfer.errors import DataError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="Import images into a dataset folder with a manifest.")
    isub = p.add_subparsers(dest="import_command", metavar="SOURCE", required=True)
    c = isub.add_parser("medmnist", help="Import a MedMNIST .npz (given, or downloaded with MD5 check).")
    c.add_argument("--npz", help="Local .npz file; without it, --name is downloaded and cached.")
    c.add_argument("--name", help="MedMNIST dataset name, e.g. pneumoniamnist, breastmnist.")
    c.add_argument("--size", type=int, default=28, choices=[28, 64, 128, 224], help="Image size to download.")
    c.add_argument("--out", required=True, help="Output folder URI (local or s3://).")
    c.add_argument("--label-names", choices=["names", "index"], default="names",
                   help="Label the images with the set's published class names (malignant, normal_or_benign; "
                   "the default) or with MedMNIST's class indices (0, 1). Either way the classes keep MedMNIST's "
                   "index order, and a binary set's finding (malignant, pneumonia) is its positive class.")
    c.set_defaults(handler=cmd_import_medmnist)
    c = isub.add_parser("folder", help="Build a manifest from a folder-per-class layout.")
    c.add_argument("--root", required=True, help="Folder URI whose subfolders are classes.")
    c.add_argument("--out", required=True, help="Where to write manifest.csv.")
    c.add_argument("--split-fractions", help="Add a split column with these train,val,test fractions, e.g. 0.7,0.1,0.2.")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--positive-class", help="The class that is positive in binary metrics and decisions "
                   "(e.g. melanoma); written to import.json, where training finds it. Default: the last class.")
    c.set_defaults(handler=cmd_import_folder)

    c = sub.add_parser("preprocess", help="Decode and preprocess a manifest into the cache.")
    add_config_args(c)
    c.set_defaults(handler=cmd_preprocess)


def cmd_import_medmnist(args) -> int:
    """``medxfer import medmnist``: --npz FILE, or --name NAME [--size N] downloaded with MD5 check."""
    from medxfer.data import medmnist
    from medxfer.data.importers import import_medmnist

    if args.npz:
        if not storage.exists(args.npz):
            raise DataError(f"{args.npz}: file not found")
        npz = storage.local_file(args.npz, str(medmnist.cache_dir()))
        name = args.name or Path(args.npz).stem
    else:
        if not args.name:
            raise DataError("give --npz FILE, or --name NAME (e.g. pneumoniamnist) to download the official file")
        npz = str(medmnist.download(args.name, args.size))
        name = args.name if args.size == 28 else f"{args.name}_{args.size}"
    s = import_medmnist(npz, args.out, name, label_names=args.label_names)
    print(
        f"imported {s['images']} images ({', '.join(f'{k} {v}' for k, v in s['splits'].items())}) "
        f"from {name} to {storage.normalize(args.out)} in {s['seconds']} s; manifest: "
        f"{storage.join(storage.normalize(args.out), 'manifest.csv')}"
    )
    print(f"classes ({'published names' if s['label_names'] == 'names' else 'class indices'}, MedMNIST's order): "
          f"{', '.join(s['classes'])}")
    if s["positive_class"] is not None:
        print(f"positive class: {s['positive_class']} (the finding; in import.json, where training finds it unless "
              "data.positive_class says otherwise)")
    return 0


def cmd_import_folder(args) -> int:
    """``medxfer import folder --root URI --out URI [--split-fractions a,b,c] [--positive-class C]``."""
    from medxfer.data.importers import folder_manifest, import_record

    fractions = None
    if args.split_fractions:
        try:
            fractions = tuple(float(x) for x in args.split_fractions.split(","))
        except ValueError:
            raise DataError(f"--split-fractions {args.split_fractions!r}: expected three numbers, e.g. 0.7,0.1,0.2") from None
        if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise DataError(f"--split-fractions {args.split_fractions!r}: need three non-negative fractions summing to 1")
    out = storage.normalize(args.out)
    manifest_uri = out if out.lower().endswith((".csv",)) else storage.join(out, "manifest.csv")
    df = folder_manifest(args.root, manifest_uri, fractions, args.seed)
    record = import_record(df, args.root, getattr(args, "positive_class", None))
    storage.write_text(storage.join(storage.parent(manifest_uri), "import.json"), json.dumps(record, indent=2) + "\n")
    storage.write_text(manifest_uri, df.to_csv(index=False))
    counts = df["label"].value_counts().to_dict()
    print(f"wrote {manifest_uri}: {len(df)} images, classes {counts}")
    pos = record["positive_class"]
    print(f"positive class: {pos} (in import.json; training uses it unless data.positive_class says otherwise)" if pos
          else f"positive class: not named, so {record['classes'][-1]} (the last class) by default; name it with "
          "--positive-class or data.positive_class")
    return 0


def cmd_preprocess(args) -> int:
    """``medxfer preprocess --config FILE``: build (or find) the cache and print where it is."""
    from medxfer.data.cache import prepare
    from medxfer.data.manifest import SPLITS

    cfg = load_config(args.config, args.set)
    p = prepare(cfg)
    counts = ", ".join(f"{s} {p.cached_rows(s)}" for s in SPLITS)
    if p.hit:
        print(f"cache hit: {p.uri} ({counts}); nothing decoded")
    else:
        bad = p.bad_file_count
        print(
            f"preprocessed {p.input_rows} images in {p.decode_seconds} s "
            f"({p.images_per_second} img/s) -> {p.uri} ({counts}"
            + (f"; {bad} bad file(s) skipped, listed in dataset.json" if bad else "") + ")"
        )
    print(f"key: {p.key}")
    return 0
