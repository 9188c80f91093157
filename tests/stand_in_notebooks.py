"""Small stand-in phase notebooks and params files for the tests of the runner, the command line and
provenance: each notebook writes a stand-in for every artifact its phase declares, in seconds."""

from pathlib import Path

HEADER = """# %% tags=["parameters"]
run_dir = ""  # run folder

# %%
import time
from avalanche_nb import params, phases, provenance
out = provenance.phase_output(run_dir, "{phase}")
seed = params.for_run(run_dir).seed
for a in phases.get("{phase}").writes:  # stand-ins for the declared artifacts
    (out / a.name).write_text("stand-in")
"""

BODIES = {
    "00_data_and_model": 'provenance.record(out, note="first")\n',
    "01_event_lattice": ('src = provenance.load_input(run_dir, "00_data_and_model/model.json", out)\n'
                         'if seed == 13:\n    raise ValueError("planted failure")\n'
                         'if seed == 17:  # a hang: the marker tells the test the cell is running\n'
                         '    (out / "sleeping").write_text("")\n    time.sleep(60)\n'
                         '(out / "b.txt").write_text(src.read_text())\n'),
}


def write_notebooks(d: Path, bodies: dict | None = None) -> Path:
    """One stand-in ``<phase>.py`` per phase in the new folder ``d``; ``bodies`` replace :data:`BODIES`."""
    from avalanche_nb import phases

    d.mkdir()
    bodies = BODIES | (bodies or {})
    for phase in phases.names():
        (d / f"{phase}.py").write_text(HEADER.format(phase=phase) + bodies.get(phase, ""))
    return d


def params_file(tmp_path, seed, model="tiny-llama"):
    f = tmp_path / f"p{seed}.yaml"
    f.write_text(f"seed: {seed}\nprogress: false\nmodel: {model}\n")
    return f
