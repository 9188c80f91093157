"""The ``avalanche-nb`` command.

    avalanche-nb run --params params/default.yaml [--phases 00,01,02] [--out outputs/runs] [--run-id ID] [--jobs 2]
    avalanche-nb run --params P --run-id ID --resume [--phases 03]   # the phases a run lacks
    avalanche-nb verify outputs/runs/<run_id>
    avalanche-nb list [--out outputs/runs]
    avalanche-nb remove outputs/runs/<run_id> --yes
    avalanche-nb paper outputs/runs/<run_id> [--no-pdf]   # paper/build/<run_id>/: numbers, tables, figures, PDF
    avalanche-nb results outputs/runs/<run_id> [--out docs/RESULTS.md]
    avalanche-nb params | artifacts   # every params key / every artifact, as markdown
    avalanche-nb campaign CAMPAIGN.yaml [--address auto|ray://HOST:PORT] [--resume] [--id ID] [--out DIR]
    avalanche-nb campaign CAMPAIGN.yaml --status     # each cell's state, failed phase and reason

``list``, ``verify``, ``params``, ``artifacts`` and ``remove`` never import torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import params as P
from . import phases as registry
from . import provenance, runner


def _list_runs(out: Path) -> None:
    if not out.is_dir():
        print(f"no runs in {out}")
        return
    for run_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        done = [ph.split("_")[0] for ph in runner.finished(run_dir)]
        bad = [p.name for p in run_dir.iterdir() if p.name.endswith((".failed", ".partial"))]
        print(f"{run_dir.name}  phases: {','.join(done) or '-'}" + (f"  incomplete: {', '.join(bad)}" if bad else ""))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avalanche-nb", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute notebook phases into a new run folder")
    r.add_argument("--params", required=True, help="YAML params file (see `avalanche-nb params`)")
    r.add_argument("--phases", help=f"comma-separated phase numbers or names (default all: {','.join(registry.names())})")
    r.add_argument("--out", default="outputs/runs", help="folder holding run folders (default outputs/runs)")
    r.add_argument("--run-id", help="name of the run folder (default: timestamp + params hash)")
    r.add_argument("--resume", action="store_true",
                   help="add phases to the existing run --run-id (same params): --phases, or every phase it lacks")
    r.add_argument("--jobs", type=int, default=1,
                   help="phases run at once, each once the phases it reads have finished (default 1; the "
                        "artifacts are the same)")
    v = sub.add_parser("verify", help="re-hash a run's artifacts against its manifests")
    v.add_argument("run_dir")
    ls = sub.add_parser("list", help="list runs and their finished phases")
    ls.add_argument("--out", default="outputs/runs")
    rm = sub.add_parser("remove", help="delete a run folder (asks for --yes)")
    rm.add_argument("run_dir")
    rm.add_argument("--yes", action="store_true", help="really delete it")
    pa = sub.add_parser("paper", help="build the paper of a verified run into paper/build/<run_id>/")
    pa.add_argument("run_dir")
    pa.add_argument("--out", help="build folder (default paper/build/<run_id>)")
    pa.add_argument("--no-pdf", action="store_true", help="write numbers, tables and figures, skip LaTeX")
    rs = sub.add_parser("results", help="write a run's results page (Markdown) from its artifacts")
    rs.add_argument("run_dir")
    rs.add_argument("--out", help="file to write (default: print)")
    c = sub.add_parser("campaign", help="run a campaign of runs (a grid of params overrides) as Ray tasks")
    c.add_argument("campaign_file", help="YAML campaign file (base, grid, cells, phases; see docs/CAMPAIGNS.md)")
    c.add_argument("--address", help="join this Ray cluster (auto, or ray://HOST:PORT); default: Ray on this machine")
    c.add_argument("--resume", action="store_true", help="re-queue the cells that have not finished (never a finished one)")
    c.add_argument("--id", help="campaign id, the folder's name (default: the campaign file's name)")
    c.add_argument("--out", default="outputs/campaigns", help="folder holding campaigns (default outputs/campaigns)")
    c.add_argument("--num-cpus", type=int, help="CPUs the local Ray may use (default all; ignored with --address)")
    c.add_argument("--status", action="store_true", help="print each cell's state and exit")
    sub.add_parser("params", help="print every params key with its default and meaning")
    sub.add_parser("artifacts", help="print every phase's artifacts and their schemas")
    return parser


def _main(args: argparse.Namespace) -> int:
    if args.cmd == "run":
        run_dir = runner.run(args.params, args.phases, args.out, args.run_id, resume=args.resume, jobs=args.jobs)
        print(f"[avalanche-nb] run complete: {run_dir}")
    elif args.cmd == "campaign":
        from . import campaign

        if args.status:
            c = campaign.load(args.campaign_file, args.id)
            print(campaign.status_table(Path(args.out) / c.campaign_id))
        else:
            campaign.run(args.campaign_file, args.out, args.address, args.resume, args.id, num_cpus=args.num_cpus)
    elif args.cmd == "verify":
        problems = runner.verify(args.run_dir)
        for msg in problems:
            print(f"FAIL {msg}")
        if problems:
            return 1
        print(f"OK {args.run_dir}: every artifact matches its manifest")
    elif args.cmd == "list":
        _list_runs(Path(args.out))
    elif args.cmd == "remove":
        if not args.yes:
            print(f"avalanche-nb: would delete {args.run_dir} and everything in it; add --yes to do it", file=sys.stderr)
            return 2
        runner.remove(args.run_dir)
        print(f"removed {args.run_dir}")
    elif args.cmd == "paper":
        from . import paper

        out = paper.build(args.run_dir, args.out, compile_pdf=not args.no_pdf)
        print(f"paper of {args.run_dir}: {out}" + ("" if args.no_pdf else f" ({out / 'main.pdf'})"))
    elif args.cmd == "results":
        from . import results

        text = results.results_page(args.run_dir)
        if args.out:
            Path(args.out).write_text(text)
            print(f"wrote {args.out}")
        else:
            print(text)
    elif args.cmd == "params":
        print(P.markdown_table())
    else:
        from .docs import artifacts_markdown

        print(artifacts_markdown())
    sys.stdout.flush()  # inside the try: a reader that left (`| head`) raises here, not at exit
    return 0


def _campaign_interrupted() -> type:
    from .campaign import CampaignInterrupted

    return CampaignInterrupted


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except (runner.RunInterrupted, _campaign_interrupted()) as err:
        print(f"\n[avalanche-nb] {err}", file=sys.stderr)
        return 130
    except (P.ParamsError, provenance.RunExistsError, runner.PhaseFailedError, FileNotFoundError,
            runner.UnverifiedRunError) as err:
        print(f"avalanche-nb: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `avalanche-nb params | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
