"""The ``medxfer`` command: the argument parser and the one place errors become messages.

Thin on purpose: each subcommand is registered by reference to its handler in this package
(``medxfer.cli.<area>:<function>``, imported only when used so ``medxfer --help`` stays fast);
a handler parses nothing, calls one library function and prints its result. No library module
imports from here. Expected failures (:class:`medxfer.errors.MedxferError`)
print one message and exit with its code; nothing ends in a bare traceback unless
``MEDXFER_DEBUG=1`` asks for it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from medxfer import __version__
from medxfer.errors import find_medxfer_error


def _add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", "-c", required=required, help="Job config YAML (local path or s3:// URI).")
    p.add_argument(
        "--set",
        dest="set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="Override a config value (YAML scalar); repeatable, e.g. --set train.lr=3e-4.",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medxfer",
        description="Transfer learning for medical image classification on Ray and Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"medxfer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="More log output.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # config
    p = sub.add_parser("config", help="Validate, show or describe job configs.")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = csub.add_parser("validate", help="Check a job config; exit 2 with one line per problem.")
    c.add_argument("file")
    c.add_argument("--set", dest="set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    c.set_defaults(handler="medxfer.cli.config:config_validate")
    c = csub.add_parser("schema", help="Print the JSON schema of job configs (for editors).")
    c.set_defaults(handler="medxfer.cli.config:config_schema")
    c = csub.add_parser("show", help="Print the effective config with defaults filled in.")
    c.add_argument("file", nargs="?")
    c.add_argument("--set", dest="set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    c.set_defaults(handler="medxfer.cli.config:config_show")

    # import
    p = sub.add_parser("import", help="Import images into a dataset folder with a manifest.")
    isub = p.add_subparsers(dest="import_command", metavar="SOURCE", required=True)
    c = isub.add_parser("medmnist", help="Import a MedMNIST .npz (given, or downloaded with MD5 check).")
    c.add_argument("--npz", help="Local .npz file; without it, --name is downloaded and cached.")
    c.add_argument("--name", help="MedMNIST dataset name, e.g. pneumoniamnist, breastmnist.")
    c.add_argument("--size", type=int, default=28, choices=[28, 64, 128, 224], help="Image size to download.")
    c.add_argument("--out", required=True, help="Output folder URI (local or s3://).")
    c.set_defaults(handler="medxfer.cli.data:cmd_import_medmnist")
    c = isub.add_parser("folder", help="Build a manifest from a folder-per-class layout.")
    c.add_argument("--root", required=True, help="Folder URI whose subfolders are classes.")
    c.add_argument("--out", required=True, help="Where to write manifest.csv.")
    c.add_argument(
        "--split-fractions",
        help="Add a split column with these train,val,test fractions, e.g. 0.7,0.1,0.2.",
    )
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--positive-class", help="The class that is positive in binary metrics and decisions "
                   "(e.g. melanoma); written to import.json, where training finds it. Default: the last class.")
    c.set_defaults(handler="medxfer.cli.data:cmd_import_folder")

    # stages that take a job config
    c = sub.add_parser("preprocess", help="Decode and preprocess a manifest into the cache (Ray Data).")
    _add_config_args(c)
    c.set_defaults(handler="medxfer.cli.data:cmd_preprocess")

    c = sub.add_parser("source-train", help="Train a source model (Ray Train).")
    _add_config_args(c)
    c.set_defaults(handler="medxfer.cli.train:cmd_source_train")

    c = sub.add_parser("finetune", help="Fine-tune a source model on a target dataset (Ray Train).")
    _add_config_args(c)
    c.add_argument("--source", help="Source model bundle URI (overrides model.init).")
    c.set_defaults(handler="medxfer.cli.train:cmd_finetune")

    c = sub.add_parser("pretrain", help="Self-supervised pretraining of a backbone (Ray Train).")
    _add_config_args(c)
    c.set_defaults(handler="medxfer.cli.train:cmd_pretrain")

    c = sub.add_parser("evaluate", help="Evaluate a bundle: metrics with CIs, operating point, plots.")
    c.add_argument("--bundle", help="Model bundle URI.")
    c.add_argument("--data", help="Manifest or job config naming the data.")
    c.add_argument("--split", default=None, help="Split to evaluate (default from config: test).")
    c.add_argument("--out", help="Report folder (default: <bundle>/../report).")
    c.add_argument("--compare", nargs=2, metavar=("BUNDLE_A", "BUNDLE_B"), help="Compare two bundles.")
    c.add_argument("--set", dest="set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    c.set_defaults(handler="medxfer.cli.models:cmd_evaluate")

    c = sub.add_parser("predict", help="Batch inference over a folder or manifest (Ray Data).")
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
    c.set_defaults(handler="medxfer.cli.models:cmd_predict")

    p = sub.add_parser("registry", help="List, show or promote registered models.")
    rsub = p.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    for name, hlp in (("list", "List models and versions."), ("show", "Show one model or version.")):
        c = rsub.add_parser(name, help=hlp)
        c.add_argument("model", nargs="?")
        c.add_argument("--version")
        c.add_argument("--root", default=None, help="Storage root (default ./medxfer-runs).")
        c.set_defaults(handler="medxfer.cli.registry:cmd_registry")
    c = rsub.add_parser("promote", help="Register a bundle and promote it if it beats the champion.")
    c.add_argument("model")
    c.add_argument("--bundle", required=True)
    c.add_argument("--report", help="Evaluation report.json of the bundle on the holdout.")
    c.add_argument("--force", action="store_true", help="Promote without the comparison.")
    c.add_argument("--root", default=None)
    c.set_defaults(handler="medxfer.cli.registry:cmd_registry")

    c = sub.add_parser("retrain", help="Preprocess, fine-tune, evaluate and promote if better.")
    _add_config_args(c)
    when = c.add_mutually_exclusive_group()
    when.add_argument("--tick", help="Schedule time (ISO) naming this run; default: now, to the hour.")
    when.add_argument("--tick-from-job", metavar="JOB_NAME",
                      help="Take the tick from a scheduler's Job name, <name>-<scheduled minute since 1970>.")
    c.set_defaults(handler="medxfer.cli.registry:cmd_retrain")

    p = sub.add_parser("bundle", help="Inspect model bundles.")
    bsub = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    c = bsub.add_parser("show", help="Print a bundle's model card and verify its weights.")
    c.add_argument("uri")
    c.set_defaults(handler="medxfer.cli.models:cmd_bundle_show")
    c = bsub.add_parser("upgrade", help="Re-export a bundle of an older format as a hashed bundle in a new folder.")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--positive-class", help="The positive class of a multiclass bundle (default: the last class).")
    c.set_defaults(handler="medxfer.cli.models:cmd_bundle_upgrade")

    p = sub.add_parser("k8s", help="Render Kubernetes manifests for a job config.")
    ksub = p.add_subparsers(dest="k8s_command", metavar="ACTION", required=True)
    c = ksub.add_parser("render", help="Print RayJob/RayCluster/CronJob YAML for a config.")
    _add_config_args(c)
    c.add_argument("--image", help="Container image (default: the pinned medxfer image; a ConfigMap has none).")
    c.add_argument("--kind", default="rayjob", choices=["rayjob", "raycluster", "raycronjob", "cronjob", "configmap"],
                   help="configmap: every job config in the --config folder, as the medxfer-jobs ConfigMap.")
    c.add_argument("--stage", default=None, help="Stage the job runs (default from the config file name).")
    c.set_defaults(handler="medxfer.cli.deploy:cmd_k8s_render")

    p = sub.add_parser("experiment", help="Experiments: label efficiency.")
    esub = p.add_subparsers(dest="experiment_command", metavar="NAME", required=True)
    c = esub.add_parser("label-efficiency", help="Fine-tune at several label fractions, source vs scratch.")
    _add_config_args(c)
    c.add_argument("--out", help="Folder for the table and plot (default: runs/<name>/).")
    c.set_defaults(handler="medxfer.cli.train:cmd_label_efficiency")

    c = sub.add_parser("demo", help="End to end on MedMNIST: source-train, fine-tune, compare, promote.")
    c.add_argument("--data-dir", default=os.environ.get("MEDXFER_DATA_DIR"), help="Folder with MedMNIST .npz files.")
    c.add_argument("--root", default="./medxfer-demo", help="Storage root for the demo.")
    c.add_argument("--fast", action="store_true", help="A cut-down run (for tests).")
    c.set_defaults(handler="medxfer.cli.deploy:cmd_demo")
    return parser


def _resolve(handler: str):
    module, func = handler.split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "werkzeug", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        fn = _resolve(args.handler)
        rc = fn(args)
        return int(rc or 0)
    except KeyboardInterrupt:
        print("medxfer: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place errors become messages
        if os.environ.get("MEDXFER_DEBUG"):
            raise
        ours = find_medxfer_error(e)
        if ours is not None:
            print(f"medxfer: error: {ours}", file=sys.stderr)
            return ours.exit_code
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(
            f"medxfer: unexpected error ({type(e).__name__}): {first}\n"
            "  re-run with MEDXFER_DEBUG=1 for the full traceback, and please report it",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
