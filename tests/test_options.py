"""The option names' checks: the gain grid and the g* rule names (old names work with a warning)."""

import warnings

import pytest

from avalanche_nb import options


def test_check_gain_grid_sorts_and_names_what_is_wrong():
    assert options.check_gain_grid([1.5, 1, 0.5]) == [0.5, 1.0, 1.5]
    assert [type(g) for g in options.check_gain_grid((2, 1))] == [float, float]
    assert options.check_gain_grid([2.0, 1.0 + 1e-13]) == [1.0 + 1e-13, 2.0]  # 1.0 up to 1e-12
    with pytest.raises(ValueError, match="the gain grid is empty"):
        options.check_gain_grid([])
    with pytest.raises(ValueError, match=r"gains must be >= 0, got \[-0.5\]"):
        options.check_gain_grid([1.0, -0.5])
    with pytest.raises(ValueError, match=r"the gain grid \[0.5, 1.000001\] must include 1.0"):
        options.check_gain_grid([1.000001, 0.5])
    with pytest.raises(ValueError, match=r"the gain grid \[0.5, 1.0, 1.0\] repeats a value"):
        options.check_gain_grid([1.0, 0.5, 1.0])


def test_gstar_rule_keeps_current_names_and_renames_old_ones_with_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a current name warns about nothing
        assert [options.gstar_rule(r) for r in options.GSTAR_RULES] == list(options.GSTAR_RULES)
    with pytest.warns(FutureWarning, match="'delta_b_max' is now called 'z_tot_n1_max'"):
        assert options.gstar_rule("delta_b_max") == "z_tot_n1_max"
    with pytest.raises(ValueError, match=r"unknown g\* rule 'chi_max'; rules: seed_b_tot, chi_perc_max, "
                                         r"z_tot_n1_max, plateau"):
        options.gstar_rule("chi_max")
