"""Does `vitkit predict` on the benchmark's files say what the demo's own page classifier said?

Runs the installed command line on every FRB image the demo wrote (``OUT/frb/{easy,hard}/*.jpg``,
375 files in the paper layout) and compares its top-1 font with the per-page predictions recorded
in ``OUT/metrics.json``. Prints the agreement and every page that differs.

    python benchmarks/frb_predict_check.py [--demo runs/demo]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def top1_from_table(output: str) -> list[str]:
    """Top-1 class of each image in ``vitkit predict -k 1`` output (one rich table per image)."""
    return [line.split("│")[1].strip() for line in output.splitlines() if line.count("│") == 3]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, default=Path("runs/demo"), help="a finished `vitkit demo` output folder")
    args = ap.parse_args()
    metrics = json.loads((args.demo / "metrics.json").read_text())
    stride = metrics["config"]["eval_stride"]
    exe = shutil.which("vitkit") or str(Path(sys.executable).with_name("vitkit"))
    total = same = 0
    for split in ("easy", "hard"):
        records = [json.loads(line) for line in (args.demo / "frb" / f"{split}.jsonl").read_text().splitlines()]
        records = records[::stride]
        files = [str(args.demo / "frb" / r["path"]) for r in records]
        run = subprocess.run([exe, "predict", str(args.demo / "model"), *files, "-k", "1"],
                             capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "200"})
        tops = top1_from_table(run.stdout)
        expected = metrics["frb"][split]["predictions"]
        if len(tops) != len(expected):
            print(f"{split}: parsed {len(tops)} predictions for {len(expected)} pages", file=sys.stderr)
            return 1
        for r, a, b in zip(records, tops, expected, strict=True):
            if a != b:
                print(f"differs: {r['path']} predict={a} demo={b}")
        total += len(tops)
        same += sum(a == b for a, b in zip(tops, expected, strict=True))
    print(f"vitkit predict agrees with the demo's page classifier on {same} / {total} pages")
    return 0 if same == total else 1


if __name__ == "__main__":
    sys.exit(main())
