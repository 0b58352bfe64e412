"""Handlers for ``medxfer k8s render`` and ``medxfer demo``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import PurePosixPath

from medxfer.cli.arguments import add_config_args
from medxfer.errors import ConfigError

log = logging.getLogger("medxfer.experiments.demo")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("k8s", help="Render Kubernetes manifests for a job config.")
    ksub = p.add_subparsers(dest="k8s_command", metavar="ACTION", required=True)
    c = ksub.add_parser("render", help="Print RayJob/RayCluster/CronJob YAML for a config.")
    add_config_args(c)
    c.add_argument("--image", help="Container image (default: the pinned medxfer image; a ConfigMap has none).")
    c.add_argument("--kind", default="rayjob", help="The object: rayjob (default) or another kind medxfer.k8s "
                   "registers (an unknown kind is refused with the list); configmap: every job config in the "
                   "--config folder, as the medxfer-jobs ConfigMap.")
    c.add_argument("--stage", default=None, help="Stage the job runs (default from the config file name).")
    c.set_defaults(handler=cmd_k8s_render)

    c = sub.add_parser("demo", help="End to end on MedMNIST: source-train, fine-tune from it and from scratch "
                       "with 10%% and 100%% of the labels, compare, plot, promote.")
    c.add_argument("--data-dir", default=os.environ.get("MEDXFER_DATA_DIR"), help="Folder with MedMNIST .npz files.")
    c.add_argument("--root", default="./medxfer-demo", help="Storage root for the demo.")
    c.add_argument("--fast", action="store_true", help="A cut-down run (for tests).")
    c.set_defaults(handler=cmd_demo)


def cmd_k8s_render(args) -> int:
    from medxfer.config.loading import load_config
    from medxfer.k8s.configmap import configmap
    from medxfer.k8s.names import CONFIG_DIR, CONFIGMAP, DEFAULT_IMAGE
    from medxfer.k8s.render import render, to_yaml
    from medxfer.k8s.stages import stage_from_path

    parts = ["medxfer k8s render", f"--config {args.config}", f"--kind {args.kind}"]
    if args.kind == "configmap":
        if args.set or args.stage:
            raise ConfigError(["--kind configmap: the ConfigMap holds the files in --config as they are; "
                               "--set and --stage do not apply"])
        sys.stdout.write(to_yaml(configmap(args.config), " ".join(parts)))
        return 0
    cfg = load_config(args.config, args.set)
    stage = args.stage or stage_from_path(args.config)
    obj = render(cfg, args.kind, stage, args.image or DEFAULT_IMAGE,
                 config_file=PurePosixPath(args.config).name, overrides=args.set)
    if args.kind != "raycluster":
        print(f"medxfer: note: the pod reads {CONFIG_DIR}/{PurePosixPath(args.config).name}: it must be in the "
              f"{CONFIGMAP} ConfigMap (k8s/04-configmap-jobs.yaml, rendered from jobs/ by `make k8s`)",
              file=sys.stderr)
    parts += [f"--stage {args.stage}"] if args.stage else []
    parts += [f"--image {args.image}"] if args.image else []
    parts += [f"--set {shlex.quote(s)}" for s in args.set]
    sys.stdout.write(to_yaml(obj, " ".join(parts)))
    return 0


def cmd_demo(args) -> int:
    from medxfer.experiments.demo import run_demo

    summary = run_demo(args.data_dir, args.root, fast=args.fast)
    log.debug("%s", json.dumps(summary, default=str)[:500])
    return 0
