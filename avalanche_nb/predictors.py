"""Predict fitted emergence parameters from architecture (seed 003, Table 4 features).

Features of a (model, layer) row: layer position ``l / L`` and its square and cube, heads / hidden,
MLP ratio, width / depth, heads / layers, log hidden, layer × depth. Ridge and random-forest
regressions are scored by cross-validated R² (K-fold, seeded), with permutation importance on the
full fit; with fewer rows than ``min_rows`` no conclusion is drawn and the result says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .phases import PREDICTOR_FEATURES

FEATURES = PREDICTOR_FEATURES


def features(rows: pd.DataFrame) -> pd.DataFrame:
    """Table 4 features from columns layer, layers, width, heads, mlp_ratio."""
    pos = (rows.layer + 1) / rows.layers
    return pd.DataFrame({
        "layer_pos": pos, "layer_pos2": pos ** 2, "layer_pos3": pos ** 3, "heads_per_hidden": rows.heads / rows.width,
        "mlp_ratio": rows.mlp_ratio, "width_per_depth": rows.width / rows.layers, "heads_per_layers": rows.heads / rows.layers,
        "log_hidden": np.log(rows.width), "layer_x_depth": rows.layer * rows.layers}, index=rows.index)


def fitted_rows(fits: pd.DataFrame, specs: dict) -> pd.DataFrame:
    """The successful ma5 fits of the trained models (``fits.parquet`` rows) with their architecture
    columns ``layers, width, heads, mlp_ratio`` from ``specs`` (model name -> training spec); fits of
    other models (e.g. ingested trajectories) are left out."""
    rows = fits[(fits.fit == "ma5") & fits.ok & fits.model.isin(list(specs))].reset_index(drop=True)
    for key in ("layers", "width", "heads", "mlp_ratio"):
        rows[key] = [getattr(specs[m], key) for m in rows.model]
    return rows


def predict(rows: pd.DataFrame, targets: list[str], *, seed: int, min_rows: int = 12, folds: int = 5) -> pd.DataFrame:
    """Cross-validated R² (mean, std over ``folds`` folds) of Ridge and a random forest for each target
    column, and the permutation importance of each feature (folds, forest and permutations seeded with
    ``seed``); ``conclusive`` is False below ``min_rows`` rows."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = features(rows)
    out = []
    for target in targets:
        # a target no fit produced (e.g. every ma5 fit failed on a short trajectory) has no rows
        y = rows[target].to_numpy(float) if target in rows else np.full(len(rows), np.nan)
        keep = np.isfinite(y)
        n = int(keep.sum())
        # every column on every row (NaN when inconclusive): the table's columns never depend on the data
        base = {"target": target, "n_rows": n, "cv_r2": np.nan, "cv_r2_std": np.nan} | {f"imp_{f}": np.nan for f in FEATURES}
        if n < max(min_rows, folds):
            out.append({**base, "regressor": None, "conclusive": False,
                        "note": f"{n} rows: too few for a conclusion (need {max(min_rows, folds)})"})
            continue
        for name, reg in (("ridge", make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))),
                          ("random_forest", RandomForestRegressor(n_estimators=200, random_state=seed))):
            cv = KFold(folds, shuffle=True, random_state=seed)
            r2 = cross_val_score(reg, X[keep], y[keep], cv=cv, scoring="r2")
            reg.fit(X[keep], y[keep])
            imp = permutation_importance(reg, X[keep], y[keep], n_repeats=10, random_state=seed)
            out.append({**base, "regressor": name, "conclusive": True, "cv_r2": float(r2.mean()), "cv_r2_std": float(r2.std()),
                        "note": "", **{f"imp_{f}": float(v) for f, v in zip(FEATURES, imp.importances_mean)}})
    return pd.DataFrame(out)
