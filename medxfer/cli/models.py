"""Handlers for the commands that use a model: ``evaluate``, ``predict``, ``bundle show|upgrade``."""

from __future__ import annotations

import json

from medxfer import storage
from medxfer.errors import ConfigError


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
    from medxfer.predict import predict

    s = predict(args.bundle, args.input, args.output, batch_size=args.batch_size, fail_on_bad=args.fail_on_bad,
                report=args.report, registry_version=args.registry_version, root=args.root)
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
            print(f"  {p}: {e}")
    return 0


def cmd_bundle_show(args) -> int:
    """``medxfer bundle show URI``: print the card and say what was verified."""
    from medxfer.bundle import CARD, load_bundle

    b = load_bundle(args.uri)
    card = dict(b.card)
    config = card.pop("config", None)
    print(json.dumps(card, indent=2, default=str))
    if config is not None:
        print(f"(training config: {len(json.dumps(config))} bytes; see {storage.join(args.uri, CARD)})")
    n = sum(t.numel() for t in b.state_dict.values())
    print(f"card: {card['format']}, sha256 verified ({card['card_sha256'][:16]}...)")
    print(f"weights: {len(b.state_dict)} tensors, {n:,} values, sha256 verified ({card['weights_sha256'][:16]}...)")
    return 0


def cmd_bundle_upgrade(args) -> int:
    """``medxfer bundle upgrade SRC DST [--positive-class C]``: re-export an older bundle, hashed."""
    from medxfer.bundle import upgrade_bundle

    card = upgrade_bundle(args.src, args.dst, args.positive_class)
    print(f"{args.dst}: {card['format']} bundle {card['id']} (card sha256 {card['card_sha256'][:16]}..., "
          f"positive class {card.get('positive_class') or '-'}); {args.src} left as it was")
    return 0
