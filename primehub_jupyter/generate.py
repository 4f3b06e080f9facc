"""Writes the files generated from the contract models (`make generate`; tests check them)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .core.schemas import api_models, typescript_schema
from .engines.kubernetes.crd import crd_yaml

REPO = Path(__file__).resolve().parents[1]
CRD_FILE = Path("deploy/base/crd.yaml")
TS_SCHEMA_FILE = Path("labextension/src/generated/api-schema.json")
# Written from TS_SCHEMA_FILE by json-schema-to-typescript (labextension/scripts/api-types.mjs).
TS_TYPES_FILE = Path("labextension/src/generated/api-types.ts")


def generated_files() -> dict[Path, str]:
    """Each file Python generates, relative to the repository, with the text it must hold."""
    return {
        CRD_FILE: crd_yaml(),
        TS_SCHEMA_FILE: json.dumps(typescript_schema(api_models()), indent=2) + "\n",
    }


def stale_files(root: Path = REPO) -> list[Path]:
    """The generated files under `root` that differ from what `make generate` would write."""
    stale = []
    for path, text in generated_files().items():
        target = root / path
        if not target.exists() or target.read_text() != text:
            stale.append(path)
    return stale


def main(argv: list[str] | None = None) -> int:
    """Write the generated files, or with --check only say which are out of date (exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m primehub_jupyter.generate")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    parser.add_argument("--root", type=Path, default=REPO)
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.root)
        for path in stale:
            print(f"{path} is out of date: run `make generate`", file=sys.stderr)
        return 1 if stale else 0
    for path, text in generated_files().items():
        target = args.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
