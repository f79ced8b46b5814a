"""Credentials given on the command line never reach Hydra.

Hydra writes its overrides into ``.hydra/*``, ``multirun.yaml``, the job folder names and the
submitit pickles. So before Hydra starts, an override whose key is secret-named
(``outro_sweep.files.masking.is_secret_name``), e.g. ``+judge.api_key=sk-...``, becomes a
reference to an environment variable of this process, ``+judge.api_key=${oc.env:
OUTRO_SWEEP_SECRET_0}``, which holds the value: every file shows the reference, the config
resolves to the value, and the jobs inherit it (submitit's local processes inherit the
environment, and ``sbatch`` exports it to SLURM jobs). The variable's name is secret-named
too, so its value is masked wherever it is printed.
"""

from __future__ import annotations

import os

from outro_sweep.errors import ConfigError
from outro_sweep.files.masking import is_secret_name, override_key

ENV_PREFIX = "OUTRO_SWEEP_SECRET_"


def move_secrets_to_environment(argv: list[str]) -> list[str]:
    """``argv`` (the arguments after the program) with every secret-named override's value
    moved into ``os.environ``. A sweep over a secret-named key is refused in one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, moved, count = OverridesParser.create(), [], 0
    for arg in argv:
        if arg.startswith("-") or "=" not in arg or not is_secret_name(override_key(arg)):
            moved.append(arg)
            continue
        prefix, raw = arg.split("=", 1)
        try:
            override = parser.parse_override(arg)
            value = override.value()
            sweep = override.is_sweep_override()
        except Exception:  # malformed grammar: keep the text, so Hydra never sees it either
            value, sweep = raw, False
        if sweep:
            raise ConfigError(f"{override_key(arg)} is secret-named: it takes one value, not a sweep "
                              "(quote a value that contains a comma)")
        if value == "" or (isinstance(value, str) and value.startswith("${") and value.endswith("}")):
            moved.append(arg)  # nothing to hide, or already a reference
            continue
        name = f"{ENV_PREFIX}{count}"
        count += 1
        if isinstance(value, str):
            os.environ[name] = value
            moved.append(f"{prefix}=${{oc.env:{name}}}")
        else:  # a number, list or mapping: decoded from its text, so its type is kept
            os.environ[name] = raw
            moved.append(f"{prefix}='${{oc.decode:${{oc.env:{name}}}}}'")  # quoted: nested interpolation
    return moved
