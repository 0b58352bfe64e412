"""Handlers for ``medxfer registry list|show|promote`` and ``medxfer retrain``."""

from __future__ import annotations

import argparse
import json

from medxfer import storage
from medxfer.cli.arguments import add_config_args
from medxfer.errors import RegistryError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("registry", help="List, show or promote registered models.")
    rsub = p.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    for name, hlp in (("list", "List models and versions."), ("show", "Show one model or version.")):
        c = rsub.add_parser(name, help=hlp)
        c.add_argument("model", nargs="?")
        c.add_argument("--version")
        c.add_argument("--root", default=None, help="Storage root (default $MEDXFER_ROOT or ./medxfer-runs).")
        c.set_defaults(handler=cmd_registry)
    c = rsub.add_parser("promote", help="Register a bundle and promote it if it beats the champion.")
    c.add_argument("model")
    c.add_argument("--bundle", required=True)
    c.add_argument("--report", help="Evaluation report.json of the bundle on the holdout.")
    c.add_argument("--force", action="store_true", help="Promote without the comparison.")
    c.add_argument("--root", default=None)
    c.set_defaults(handler=cmd_registry)

    c = sub.add_parser("retrain", help="Preprocess, fine-tune, evaluate and promote if better.")
    add_config_args(c)
    when = c.add_mutually_exclusive_group()
    when.add_argument("--tick", help="Schedule time (ISO) naming this run, floored to promotion.tick_minutes "
                      "(default 1); default: now. The same tick again resumes its run.")
    when.add_argument("--tick-from-job", metavar="JOB_NAME",
                      help="Take the tick from a scheduler's Job name, <name>-<scheduled minute since 1970>.")
    c.set_defaults(handler=cmd_retrain)


def cmd_registry(args) -> int:
    """``medxfer registry list|show|promote``."""
    from medxfer.lifecycle.model_registry import Registry, _fmt, default_root, models

    root = default_root(args.root)
    action = args.registry_command
    if action == "list":
        if not args.model:
            names = models(root)
            if not names:
                print(f"no models registered under {storage.Layout(root).registry()}")
            for m in names:
                reg = Registry(root, m)
                ch = reg.champion()
                print(f"{m}\tversions={len(reg.list_versions())}\tchampion={ch['version'] if ch else '-'}")
            return 0
        reg = Registry(root, args.model)
        ch = reg.champion()
        for v in reg.list_versions(include_incomplete=True):
            if v.get("incomplete"):
                print(f"{v['version']}\t(incomplete registration)")
                continue
            mark = "*" if ch and ch["version"] == v["version"] else " "
            m = v.get("metrics", {})
            print(f"{mark} {v['version']}\t{v['registered_at']}\tauroc={_fmt(m.get('auroc'))}\t"
                  f"sensitivity={_fmt(m.get('sensitivity'))}\t{v.get('note', '')}")
        return 0
    if action == "show":
        if not args.model:
            raise RegistryError("registry show: name a model (see `medxfer registry list`)")
        reg = Registry(root, args.model)
        if args.version:
            out = {"version": reg.get(args.version), "report_metrics": (reg.report(args.version) or {}).get("metrics")}
        else:
            ch = reg.sync_pointer()
            out = {"champion": ch, "promotions": len(reg.generations()),
                   "versions": [v["version"] for v in reg.list_versions()]}
        print(json.dumps(out, indent=2, default=str))
        return 0
    if action == "promote":
        from medxfer.config import PromotionSection

        report = None
        report_uri = args.report or storage.join(storage.parent(args.bundle), "report", "report.json")
        if storage.exists(report_uri):
            report = storage.read_json(report_uri)
        elif not args.force:
            raise RegistryError(
                f"{report_uri}: no evaluation report; run `medxfer evaluate --bundle {args.bundle}` "
                "first, pass --report, or --force to promote without comparison"
            )
        reg = Registry(root, args.model)
        version = reg.register(args.bundle, report, note="medxfer registry promote")
        result = reg.try_promote(version, PromotionSection(), force=args.force)
        state = "PROMOTED" if result["promoted"] else "not promoted"
        print(f"{args.model} {version}: {state}: {result['reason']}")
        return 0
    raise RegistryError(f"unknown registry action {action!r}")


def cmd_retrain(args) -> int:
    """``medxfer retrain --config FILE [--tick ISO | --tick-from-job NAME]``: exit 0 promoted or not."""
    from medxfer.config.loading import load_config
    from medxfer.lifecycle.retrain import run_retrain, tick_from_job_name

    job_name = getattr(args, "tick_from_job", None)
    tick = args.tick if job_name is None else tick_from_job_name(job_name)
    rec = run_retrain(load_config(args.config, args.set), tick)
    print(f"{rec['run']}: {rec['status']}: {rec['reason']}")
    return 0
