"""Compare two run folders artifact by artifact (sha256): which artifacts are byte-identical, which
differ, which only one run has. Executed notebooks and manifests are skipped (they hold wall times);
``--data-only`` keeps only parquet and npz files (the numbers), leaving json out.

    python bench/compare_runs.py outputs/runs/before outputs/runs/after [--data-only]

Exit status 1 when any compared artifact differs or is missing from one side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from avalanche_nb import phases  # noqa: E402
from avalanche_nb.provenance import sha256_file  # noqa: E402


def artifact_hashes(run_dir: Path, data_only: bool) -> dict[str, str]:
    """sha256 per ``<phase>/<artifact>`` of every finished phase's declared artifacts (and facts.json)."""
    out = {}
    for phase in phases.PHASES:
        folder = run_dir / phase.name
        if not folder.is_dir():
            continue
        names = [a.name for a in phase.writes] + ([] if data_only else ["facts.json"])
        for name in names:
            if data_only and not name.endswith((".parquet", ".npz")):
                continue
            if (folder / name).is_file():
                out[f"{phase.name}/{name}"] = sha256_file(folder / name)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--data-only", action="store_true", help="compare only parquet and npz artifacts")
    args = ap.parse_args(argv)
    a, b = artifact_hashes(args.before, args.data_only), artifact_hashes(args.after, args.data_only)
    bad = 0
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            print(f"ONLY {'before' if key in a else 'after '} {key}")
            bad += 1
        elif a[key] != b[key]:
            print(f"DIFF   {key}")
            bad += 1
        else:
            print(f"SAME   {key}")
    print(f"{len(set(a) & set(b)) - sum(a[k] != b[k] for k in set(a) & set(b))} identical, {bad} different or missing")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
