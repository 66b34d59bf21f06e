"""`slm validate` and `slm crd`: manifests checked and the CRD printed from the same API models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slm_operator.api import ManifestError, load_manifest
from slm_operator.crd import crd_yaml

__all__ = ["register"]


def _validate(args: argparse.Namespace) -> int:
    failed = False
    for name in args.files:
        path = Path(name)
        if not path.is_file():
            sys.stderr.write(f"{path}: no such file\n")
            failed = True
            continue
        try:
            resources = load_manifest(path)
        except ManifestError as exc:
            failed = True
            sys.stderr.write(f"{path}: invalid\n")
            for error in exc.errors:
                sys.stderr.write(f"  {error}\n")
            continue
        names = ", ".join(r.metadata.name for r in resources)
        sys.stdout.write(f"{path}: valid ({names})\n")
    return 1 if failed else 0


def _crd(args: argparse.Namespace) -> int:
    text = crd_yaml()
    if not args.write:
        sys.stdout.write(text)
        return 0
    for target in args.write:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        sys.stderr.write(f"wrote {path}\n")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = subparsers.add_parser(
        "validate", help="check SLMDeployment manifests; prints every error with its field path and the fix"
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="YAML files (several documents per file allowed)")
    validate.set_defaults(func=_validate)

    crd = subparsers.add_parser("crd", help="print the SLMDeployment CustomResourceDefinition (kubectl apply -f -)")
    crd.add_argument("--write", action="append", metavar="PATH", help="write it to PATH instead (repeatable)")
    crd.set_defaults(func=_crd)
