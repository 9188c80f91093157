"""Token classes and the per-token loss change grouped by them, by hand."""

import numpy as np

from avalanche_nb import token_classes as tc


def test_token_classes_of_a_fixed_sentence():
    words = ["<s>", "ĠThe", "Ġcat", ",", "Ġand", "Ġtwo", "Ġdogs", "Ġwere", "▁there", "Ċ", "!)", "ĠParis"]
    got = [tc.token_class(w, first=i == 0) for i, w in enumerate(words)]
    assert got == ["first", "function", "content", "punctuation", "function", "content", "content", "function",
                   "function", "punctuation", "punctuation", "content"]

    class Tok:
        def decode(self, ids):
            return words[ids[0]]

    classes = tc.token_classes(Tok(), np.array([[0, 1, 2, 3], [2, 3, 4, 11]]))
    assert classes.tolist() == [["first", "function", "content", "punctuation"], ["first", "punctuation", "function", "content"]]


def test_loss_change_by_class_by_hand():
    before = np.array([[1.0, 2.0, 3.0]])
    after = np.array([[2.0, 2.0, 6.0]])
    classes = np.array([["first", "function", "content", "punctuation"]])
    t = tc.loss_change_by_class(before, after, classes).set_index(["class_by", "token_class"])
    assert t.loc[("input", "first"), "delta"] == 1.0 and t.loc[("input", "content"), "delta"] == 3.0
    assert t.loc[("target", "function"), "delta"] == 1.0 and t.loc[("target", "punctuation"), "after"] == 6.0
    assert ("target", "first") not in t.index and t.n.sum() == 6
