"""Measuring in a fresh process: a script calls itself with a JSON spec and prints one JSON line back.

Peak memory of one forward is only honest in a process that has done nothing else: the RSS high-water
mark and the allocator's caches remember earlier work. The child runs ``python SCRIPT FLAG SPEC`` and
prints its result as the last line of its output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

__all__ = ["ProbeError", "run_probe"]


class ProbeError(RuntimeError):
    """The probe process failed; the message ends with the tail of its stderr."""


def run_probe(script: str, flag: str, spec: dict, env: dict[str, str] | None = None) -> dict:
    """Run ``python script flag JSON(spec)`` with ``env`` added to this environment and return the JSON of its
    last output line; :class:`ProbeError` when it fails."""
    out = subprocess.run([sys.executable, script, flag, json.dumps(spec)], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, check=False)
    if out.returncode != 0:
        raise ProbeError(f"probe {spec} failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
