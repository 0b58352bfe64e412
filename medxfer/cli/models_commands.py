"""Handlers for the commands that use a model: ``evaluate``, ``predict``, ``bundle show|upgrade``."""

from __future__ import annotations

import argparse
import json

from medxfer import storage
from medxfer.cli.arguments import add_set, printable
from medxfer.errors import ConfigError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("evaluate", help="Evaluate a bundle: metrics with CIs, operating point, plots.")
    c.add_argument("--bundle", help="Model bundle URI.")
    c.add_argument("--data", help="Manifest or job config naming the data.")
    c.add_argument("--split", default=None, help="Split to evaluate (default from config: test).")
    c.add_argument("--out", help="Report folder (default: <bundle>/../report).")
    c.add_argument("--compare", nargs=2, metavar=("BUNDLE_A", "BUNDLE_B"), help="Compare two bundles.")
    add_set(c)
    c.set_defaults(handler=cmd_evaluate)

    c = sub.add_parser("predict", help="Batch inference over a folder or manifest (in-process, or Ray Data).")
    c.add_argument("--bundle", help="Model bundle URI (optional with --registry-version).")
    c.add_argument("--report", help="Evaluation report.json of this bundle: its operating point decides.")
    c.add_argument("--registry-version", metavar="MODEL:VERSION",
                   help="A registry version (e.g. breast:v0003, or breast:champion): its bundle and operating "
                   "point decide.")
    c.add_argument("--root", default=None, help="Storage root of the registry (default $MEDXFER_ROOT or ./medxfer-runs).")
    c.add_argument("--input", required=True, help="Folder or manifest of images.")
    c.add_argument("--output", required=True, help="Output folder for predictions.parquet/.csv.")
    c.add_argument("--batch-size", type=int, default=64)
    c.add_argument("--fail-on-bad", action="store_true", help="Stop on the first undecodable file.")
    c.add_argument("--engine", choices=("auto", "local", "ray"), default="auto",
                   help="local: this process, no Ray; ray: Ray Data tasks and model replicas over the cluster; "
                   "auto (default): local up to data.local_max_images inputs (2000). Both give the same rows.")
    c.add_argument("--max-decode-bytes", type=int, default=None, metavar="BYTES",
                   help="Memory one image's decode may use (data.max_decode_bytes; default 1.5 GiB).")
    c.add_argument("--decode-timeout-s", type=float, default=None, metavar="SECONDS",
                   help="Time one image's decode may take (data.decode_timeout_s; default 60).")
    c.add_argument("--storage-shared", action="store_true",
                   help="With the Ray engine on a cluster of several nodes: the local input folder and bundle are "
                   "mounted at the same path on every node (storage.shared); without it, local folders are refused "
                   "there.")
    c.set_defaults(handler=cmd_predict)

    p = sub.add_parser("bundle", help="Inspect model bundles.")
    bsub = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    c = bsub.add_parser("show", help="Print a bundle's model card and verify its weights.")
    c.add_argument("uri")
    c.set_defaults(handler=cmd_bundle_show)
    c = bsub.add_parser("upgrade", help="Re-export a bundle of an older format as a hashed bundle in a new folder.")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--positive-class", help="The positive class of a multiclass bundle (default: the last class).")
    c.set_defaults(handler=cmd_bundle_upgrade)


def cmd_evaluate(args) -> int:
    """``medxfer evaluate --bundle URI --data MANIFEST_OR_CONFIG [--split S] [--out DIR] [--compare A B]``."""
    from medxfer.evaluate import compare_bundles, evaluate_bundle, fmt, resolve_config

    if args.compare:
        a, b = args.compare
        cfg = resolve_config(args.data, args.set, a)
        r = compare_bundles(a, b, cfg, args.split or cfg.evaluate.split, args.out)
        d = r["difference"]
        print(f"{r['metric']} A - B = {fmt(d['difference'], 4)} (95% CI {fmt(d['ci'][0], 4)} to "
              f"{fmt(d['ci'][1], 4)}) on {r['n_common']} images; report {storage.join(r['out'], 'compare.md')}")
        return 0
    if not args.bundle:
        raise ConfigError(["evaluate: give --bundle URI (or --compare A B)"])
    cfg = resolve_config(args.data, args.set, args.bundle)
    rep = evaluate_bundle(args.bundle, cfg, args.split or cfg.evaluate.split, args.out)
    for k, m in rep["metrics"].items():
        print(f"{k:>18}: {fmt(m['value'])}  (95% CI {fmt(m['ci'][0])} - {fmt(m['ci'][1])})")
    if rep.get("operating_point"):
        op = rep["operating_point"]
        print(f"positive class: {op['positive_class']} ({rep['positive_class_reason']})")
        print(f"operating point: P({op['positive_class']}) >= {op['threshold']:.4f} ({op['rule']}, chosen on val)")
    print(f"report: {rep['report_uri']}")
    if rep.get("operating_point"):
        print(f"decide with it: medxfer predict --bundle {args.bundle} --report {rep['report_uri']} --input ... "
              "--output ... (or register it: medxfer registry promote)")
    return 0


def cmd_predict(args) -> int:
    """``medxfer predict --bundle URI [--report R | --registry-version M:V] --input FOLDER_OR_MANIFEST --output F``."""
    from medxfer.lifecycle.predict import predict

    for flag, value in (("--max-decode-bytes", args.max_decode_bytes), ("--decode-timeout-s", args.decode_timeout_s)):
        if value is not None and value <= 0:
            raise ConfigError([f"predict {flag}: must be positive, got {value}"])
    s = predict(args.bundle, args.input, args.output, batch_size=args.batch_size, fail_on_bad=args.fail_on_bad,
                report=args.report, registry_version=args.registry_version, root=args.root, engine=args.engine,
                max_decode_bytes=args.max_decode_bytes, decode_timeout_s=args.decode_timeout_s,
                shared=args.storage_shared)
    print(f"predicted {s['n_predicted']} of {s['n_inputs']} images -> {s['outputs']['parquet']}")
    d = s["decision"]
    if d and d.get("source"):
        print(f"decision: {d['positive_class']} when P({d['positive_class']}) >= {d['threshold']:.4f} "
              f"({d['rule']}, chosen on {d['chosen_on']}), from {d['source']}")
    elif d:
        print(d["note"])
    if s["n_errors"]:
        print(f"{s['n_errors']} files could not be used (see the 'error' column):")
        for p, e in list(s["errors"].items())[:20]:
            print(printable(f"  {p}: {e}"))
    return 0


def cmd_bundle_show(args) -> int:
    """``medxfer bundle show URI``: print the card and say what was verified."""
    from medxfer.lifecycle.bundle import CARD, verify_bundle

    card, tensors, n = verify_bundle(args.uri)
    print(json.dumps(card.model_dump(mode="json", exclude={"config"}), indent=2, default=str))
    if card.config is not None:
        print(f"(training config: {len(json.dumps(card.config))} bytes; see {storage.join(args.uri, CARD)})")
    print(f"card: {card.format}, sha256 verified ({card.card_sha256[:16]}...)")
    print(f"weights: {tensors} tensors, {n:,} values, sha256 verified ({card.weights_sha256[:16]}...)")
    return 0


def cmd_bundle_upgrade(args) -> int:
    """``medxfer bundle upgrade SRC DST [--positive-class C]``: re-export an older bundle, hashed."""
    from medxfer.lifecycle.bundle import upgrade_bundle

    card = upgrade_bundle(args.src, args.dst, args.positive_class)
    print(f"{args.dst}: {card.format} bundle {card.id} (card sha256 {card.card_sha256[:16]}..., "
          f"positive class {card.positive_class or '-'}); {args.src} left as it was")
    return 0
