"""A hand-made gain stack for the tests of ``gain_stack``, ``avalanche_detail`` and ``widgets``: its
sizes, one hand-drawn lattice planted in it, and the branching ratio straight from its definition."""

import numpy as np

G, N, T, L, D_FF = 3, 2, 8, 3, 10
GAINS = [0.8, 1.0, 1.2]
META = dict(adjacency="von_neumann", null_draws=20, seed=0)  # the signatures' adjacency, N1 draws and seed


def hand_lattice() -> np.ndarray:
    """Sequence 0 at g = 1 (pos, rate_matched), [T, L]: avalanche A = (1,0)=2, (2,0)=1, (2,1)=3 and two
    sites (4,2)=1, (5,1)=2 that touch only diagonally (one avalanche under moore, two otherwise)."""
    a = np.zeros((T, L), np.int32)
    a[1, 0], a[2, 0], a[2, 1] = 2, 1, 3
    a[4, 2], a[5, 1] = 1, 2
    return a


def make_stack(export_dir):
    """The stack: random counts at every gain, spike definition and threshold mode, with
    :func:`hand_lattice` as sequence 0 at g = 1 (rate-matched; ``abs`` has one more spike per site and
    one site ``pos`` lacks)."""
    from avalanche_nb import gain_stack as gs

    rng = np.random.default_rng(0)
    valid = np.ones((N, T), bool)
    valid[:, 0] = False
    counts = {}
    for i, key in enumerate(gs.KEYS):
        c = (rng.random((G, N, T, L)) < 0.3 + 0.1 * np.arange(G)[:, None, None, None]).astype(np.int32)
        c *= rng.integers(1, 4, c.shape).astype(np.int32)
        c[:, ~valid] = 0
        counts[key] = c
    counts[("pos", "rate_matched")][1, 0] = hand_lattice()
    counts[("abs", "rate_matched")][1, 0] = hand_lattice() + 1 * (hand_lattice() > 0)  # abs: one more spike
    counts[("abs", "rate_matched")][1, 0, 6, 0] = 4  # and one site pos does not have
    text = np.array([[f"t{n}{t}" for t in range(T)] for n in range(N)])
    return gs.GainStack(GAINS, counts, valid, rng.integers(0, 50, (N, T)), text, np.full(L, 0.05), D_FF, **META,
                        source="hand-made", export_dir=export_dir)


def b_tot(counts, valid):
    """b_time + b_depth of the occupancy, straight from the definition."""
    X = ((counts > 0) & valid[:, :, None]).astype(int)
    return (X[:, :-1] * X[:, 1:]).sum() / X[:, :-1].sum() + (X[:, :, :-1] * X[:, :, 1:]).sum() / X[:, :, :-1].sum()
