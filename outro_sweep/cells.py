"""Look at finished cells: what their identity hashed, and why two cells differ.

    python -m outro_sweep.cells show A          [--output-dir outputs]
    python -m outro_sweep.cells diff A B        [--output-dir outputs]

A and B are cell identities (folders ``<output-dir>/cells/<identity>``) or cell folders. Both
read the ``identity_inputs`` each cell records in its ``config.yaml`` (masked like the rest of
the file): the config keys that define the cell, the results version, the fingerprints of the
model's and the benchmark's files, and the media list. ``diff`` prints every input that differs,
one line each (dotted key, then both values) and exits 1 when some differ, 0 when none do, 2
on bad input, as ``diff`` does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from outro_sweep.errors import ConfigError

FILE_SECTIONS = ("model_files", "benchmark_files", "media")  # keyed by file name, not nested config
ABSENT = "(absent)"


def cell_folder(ref: str, output_dir: Path) -> Path:
    """The folder of cell ``ref`` (an identity or a folder holding a config.yaml)."""
    for folder in (Path(ref), output_dir / "cells" / ref):
        if (folder / "config.yaml").is_file():
            return folder
    raise ConfigError(f"cell {ref!r} has no config.yaml, neither as a folder nor under {output_dir / 'cells'}: "
                      "valid values are a cell identity under --output-dir, or a cell folder")


def recorded_inputs(folder: Path) -> dict:
    """The identity inputs a cell's config.yaml records."""
    config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    inputs = config.get("identity_inputs") if isinstance(config, dict) else None
    if not isinstance(inputs, dict):
        raise ConfigError(f"{folder / 'config.yaml'} records no identity_inputs: valid values are cells written by "
                          "this version of outro_sweep (rerun the cell with force=true to record them)")
    return inputs


def flatten(inputs: dict) -> dict[str, object]:
    """``{"config": {"outro": {"alpha": 3}}}`` -> ``{"config.outro.alpha": 3}``; a file section's
    entries as ``model_files[<name>]`` (file names hold dots)."""
    flat: dict[str, object] = {}

    def walk(value, prefix: str) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(inner, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = value

    for section, value in inputs.items():
        if section in FILE_SECTIONS and isinstance(value, dict):
            for name, digest in value.items():
                flat[f"{section}[{name}]"] = digest
            if not value:
                flat[section] = {}
        else:
            walk(value, str(section))
    return flat


def differences(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """(dotted key, value in a, value in b) for every input that differs, sorted by key."""
    flat_a, flat_b = flatten(a), flatten(b)
    keys = sorted(set(flat_a) | set(flat_b))
    return [(k, flat_a.get(k, ABSENT), flat_b.get(k, ABSENT)) for k in keys if flat_a.get(k, ABSENT) != flat_b.get(k, ABSENT)]


def show(ref: str, output_dir: Path) -> int:
    folder = cell_folder(ref, output_dir)
    print(f"cell {folder.name} ({folder})")
    for key, value in flatten(recorded_inputs(folder)).items():
        print(f"  {key}: {value}")
    return 0


def diff(ref_a: str, ref_b: str, output_dir: Path) -> int:
    folder_a, folder_b = cell_folder(ref_a, output_dir), cell_folder(ref_b, output_dir)
    found = differences(recorded_inputs(folder_a), recorded_inputs(folder_b))
    if not found:
        print(f"cells {folder_a.name} and {folder_b.name}: identical identity inputs")
        return 0
    print(f"cells {folder_a.name} and {folder_b.name}: {len(found)} identity input(s) differ")
    for key, value_a, value_b in found:
        print(f"  {key}: {value_a} | {value_b}")
    return 1


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--output-dir", type=Path, default=Path("outputs"), help="the sweeps' paths.output_dir")
    parser = argparse.ArgumentParser(prog="python -m outro_sweep.cells", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("show", parents=[common], help="a cell's identity inputs").add_argument("cell")
    compare = commands.add_parser("diff", parents=[common], help="the identity inputs two cells differ in")
    compare.add_argument("cell_a")
    compare.add_argument("cell_b")
    args = parser.parse_args(argv)
    try:
        if args.command == "show":
            return show(args.cell, args.output_dir)
        return diff(args.cell_a, args.cell_b, args.output_dir)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from outro_sweep.files import masked_output

    masked_output.install()  # the console is an output: credentials masked, as in every command
    sys.exit(main())
