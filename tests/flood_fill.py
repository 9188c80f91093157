"""An independent avalanche labelling for tests: pure-Python breadth-first flood fill."""

from collections import deque

import numpy as np

#: (dt, dl) neighbour offsets of each adjacency, written out by hand (not derived from the package)
NEIGHBOURS = {
    "von_neumann": [(1, 0), (-1, 0), (0, 1), (0, -1)],
    "moore": [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)],
    "causal": [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1)],
}


def flood_fill_table(counts: np.ndarray, valid: np.ndarray, adjacency: str) -> list[tuple]:
    """Sorted ``(seq, size, n_sites, t_span, l_span, t0, l0)`` tuples of the components of
    ``(counts > 0) & valid``, found by flood fill per sequence."""
    X = (counts > 0) & valid[:, :, None]
    rows = []
    for n in range(X.shape[0]):
        seen = np.zeros(X.shape[1:], bool)
        for t, l in zip(*np.nonzero(X[n])):
            if seen[t, l]:
                continue
            seen[t, l] = True
            queue, sites = deque([(t, l)]), []
            while queue:
                a, b = queue.popleft()
                sites.append((a, b))
                for da, db in NEIGHBOURS[adjacency]:
                    c, d = a + da, b + db
                    if 0 <= c < X.shape[1] and 0 <= d < X.shape[2] and X[n, c, d] and not seen[c, d]:
                        seen[c, d] = True
                        queue.append((c, d))
            ts, ls = np.array(sites).T
            rows.append((n, int(counts[n, ts, ls].sum()), len(sites), int(np.ptp(ts) + 1), int(np.ptp(ls) + 1),
                         int(ts.min()), int(ls.min())))
    return sorted(rows)
