"""Where a run's time went: each phase's wall time and its named steps (the manifests' ``timings``), with
their shares of the run, as a Markdown table; ``--compare OTHER`` puts a second run beside it.

    python bench/profile_run.py outputs/runs/<run_id> [--compare outputs/runs/<other>]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from avalanche_nb import provenance, runner  # noqa: E402


def profile(run_dir: Path) -> dict[str, tuple[float, dict[str, float]]]:
    """phase -> (wall seconds, {step: seconds}) of every finished phase."""
    out = {}
    for phase in runner.finished(run_dir):
        m = provenance.read_manifest(run_dir / phase)
        out[phase] = (m["wall_seconds"], m.get("timings", {}))
    return out


def _minutes(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def table(run_dir: Path, other: Path | None = None) -> str:
    a = profile(run_dir)
    b = profile(other) if other else {}
    total_a = sum(w for w, _ in a.values())
    total_b = sum(w for w, _ in b.values())
    head = f"| phase / step | {run_dir.name} | share |" + (f" {other.name} | ratio |" if other else "")
    lines = [head, "| --- | ---: | ---: |" + (" ---: | ---: |" if other else "")]

    def row(label: str, sa: float | None, sb: float | None) -> str:
        line = f"| {label} | {_minutes(sa) if sa is not None else '-'} | {100 * sa / total_a:.1f}% |" \
            if sa is not None else f"| {label} | - | - |"
        if other:
            line += f" {_minutes(sb) if sb is not None else '-'} |"
            line += f" {sa / sb:.2f} |" if sa is not None and sb else " - |"
        return line

    for phase in sorted(set(a) | set(b)):
        wa, steps_a = a.get(phase, (None, {}))
        wb, steps_b = b.get(phase, (None, {}))
        lines.append(row(f"**{phase}**", wa, wb))
        for step in sorted(set(steps_a) | set(steps_b), key=lambda s: -(steps_a.get(s) or steps_b.get(s) or 0)):
            lines.append(row(f"&nbsp;&nbsp;{step}", steps_a.get(step), steps_b.get(step)))
    lines.append(row("**total**", total_a, total_b if other else None))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--compare", type=Path, help="a second run folder to put beside it")
    args = ap.parse_args(argv)
    print(table(args.run_dir, args.compare))
    return 0


if __name__ == "__main__":
    sys.exit(main())
