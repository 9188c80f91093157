"""Token classes, and the per-token loss change of an edit grouped by them.

Every token is ``first`` (position 0 / BOS), ``punctuation`` (only punctuation, symbols or
whitespace), ``function`` (in :data:`STOP_WORDS`) or ``content``; the massive-activation
interventions report their loss change per class (:func:`loss_change_by_class`).
"""

from __future__ import annotations

import string
import unicodedata

import numpy as np
import pandas as pd

TOKEN_CLASSES = ("first", "punctuation", "function", "content")

# A fixed English function-word list (articles, pronouns, prepositions, conjunctions, auxiliaries,
# determiners, common particles); lower case, matched after stripping the tokenizer's space marker.
STOP_WORDS = frozenset("""
a an the this that these those some any each every no all both either neither much many more most few
fewer less least several such what which who whom whose whichever whatever whoever
i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its
itself we us our ours ourselves they them their theirs themselves one ones
of in on at by for with about against between into through during before after above below to from
up down out off over under again further than via per upon within without onto toward towards among
across along around behind beside besides beyond near since until unto despite throughout
and or but nor so yet if then else because although though while whereas unless whether as
is am are was were be been being have has had having do does did doing will would shall should
can could may might must ought
not there here when where why how also just only very too again ever never once
""".split())

_SPACE_MARKERS = "Ġ▁ \t\n·⏎Ċ"


def _bare(token: str) -> str:
    return token.strip(_SPACE_MARKERS)


def token_class(token: str, first: bool = False) -> str:
    """``first`` (position 0 / BOS), ``punctuation`` (only punctuation, symbols or whitespace),
    ``function`` (in :data:`STOP_WORDS`, case-insensitive) or ``content``."""
    if first:
        return "first"
    bare = _bare(token)
    if all(unicodedata.category(c)[0] in "PSZC" or c in string.whitespace for c in bare):
        return "punctuation"  # an empty token (pure whitespace) counts here too
    return "function" if bare.lower() in STOP_WORDS else "content"


def token_classes(tokenizer, tokens: np.ndarray) -> np.ndarray:
    """Class of every token of ``tokens`` int [N, T] as str [N, T]; position 0 is ``first``."""
    tokens = np.asarray(tokens)
    vocab = {int(t): token_class(tokenizer.decode([int(t)])) for t in np.unique(tokens)}
    out = np.vectorize(vocab.__getitem__, otypes=[object])(tokens)
    out[:, 0] = "first"
    return out.astype(str)


def loss_change_by_class(nll_before: np.ndarray, nll_after: np.ndarray, classes: np.ndarray) -> pd.DataFrame:
    """Mean next-token loss before/after an edit, grouped by token class.

    ``nll_*`` float [N, T-1] (entry t scores token t+1), ``classes`` str [N, T]. Each scored position is
    grouped twice: by its input token (``class_by="input"``, position t, so ``first`` is the prediction
    made at the first token) and by its target (``class_by="target"``, position t+1).
    Rows: class_by, token_class, n, before, after, delta (mean after − before) and delta_se.
    """
    nll_before, nll_after = np.asarray(nll_before, float), np.asarray(nll_after, float)
    if nll_before.shape != nll_after.shape or classes.shape != (nll_before.shape[0], nll_before.shape[1] + 1):
        raise ValueError(f"shapes disagree: nll {nll_before.shape} / {nll_after.shape}, classes {classes.shape}")
    delta = nll_after - nll_before
    rows = []
    for by, cls in (("input", classes[:, :-1]), ("target", classes[:, 1:])):
        for c in TOKEN_CLASSES:
            m = cls == c
            n = int(m.sum())
            if n == 0:
                continue
            se = float(delta[m].std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
            rows.append({"class_by": by, "token_class": c, "n": n, "before": float(nll_before[m].mean()),
                         "after": float(nll_after[m].mean()), "delta": float(delta[m].mean()), "delta_se": se})
    return pd.DataFrame(rows)
