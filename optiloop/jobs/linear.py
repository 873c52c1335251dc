"""The linear family fitted in closed form: ridge regression, or L2-regularized logistic
regression, with its regularization strength chosen by the solver's own cross-validation.

A network without hidden layers trained by AdamW with early stopping lands near, but not on,
the regularized optimum that scikit-learn's solvers reach in milliseconds; on small tabular
data that optimum is often the model to beat. The fitted coefficients are written into the
:class:`TabularModel`'s one linear layer, so training, compression, export and serving treat
the linear family exactly like any other network: the preprocessing stays in the same graph.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from .models import TabularModel
from .training import EncodedSplit, scaled_target

STRENGTHS = np.logspace(-4, 4, 17)
"""Inverse regularization strengths (logistic ``C``) and ridge ``alpha`` values tried."""
MISSING_CLASS_BIAS = -30.0
"""Logit bias of a class absent from the fitted rows: it is never predicted."""


def fit_linear(model: TabularModel, rows: EncodedSplit, class_weights: list[float] | None, seed: int) -> Any:
    """Fit ``model``'s single linear layer on ``rows`` in closed form, in place, and return the
    fitted scikit-learn estimator (``None`` when the rows hold one class: nothing to fit).

    Raises ``ValueError`` when the model has hidden layers (only the linear family fits here).
    """
    if model.architecture.hidden:
        raise ValueError("a closed-form fit needs a model without hidden layers (the linear family)")
    layer = model.mlp.layers[-1]
    assert isinstance(layer, torch.nn.Linear)
    with torch.no_grad():
        features = model.preprocess(torch.from_numpy(rows.raw)).double().numpy()
    if model.task == "regression":
        fitted, weight, bias = _ridge(features, scaled_target(model, rows.target).numpy().ravel())
    else:
        fitted, weight, bias = _logistic(
            features, rows.target.astype(np.int64), layer.out_features, class_weights, seed
        )
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight).float())
        layer.bias.copy_(torch.from_numpy(bias).float())
    return fitted


def _ridge(features: np.ndarray, target: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
    from sklearn.linear_model import RidgeCV

    fitted = RidgeCV(alphas=STRENGTHS).fit(features, target)
    return fitted, np.asarray(fitted.coef_, dtype=np.float64).reshape(1, -1), np.array([float(fitted.intercept_)])


def _logistic(
    features: np.ndarray, target: np.ndarray, classes: int, class_weights: list[float] | None, seed: int
) -> tuple[Any, np.ndarray, np.ndarray]:
    """Logits weights for every class; a class missing from ``target`` gets a bias it never wins."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    weight = np.zeros((classes, features.shape[1]))
    bias = np.full(classes, MISSING_CLASS_BIAS)
    present = np.unique(target)
    if len(present) == 1:
        bias[present[0]] = 0.0
        return None, weight, bias
    balance = {int(c): float(class_weights[int(c)]) for c in present} if class_weights else None
    folds = min(5, int(np.bincount(target)[present].min()))
    with warnings.catch_warnings():
        # lbfgs may stop at max_iter on the weakest penalties; the strength CV picks among them anyway.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if folds >= 2:
            fitted = LogisticRegressionCV(
                Cs=STRENGTHS,
                cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                scoring="neg_log_loss",
                class_weight=balance,
                max_iter=2000,
                l1_ratios=(0.0,),  # pure L2, stated as scikit-learn 1.10 will require
                use_legacy_attributes=False,
            ).fit(features, target)
        else:
            fitted = LogisticRegression(class_weight=balance, max_iter=2000).fit(features, target)
    coef, intercept = np.asarray(fitted.coef_), np.asarray(fitted.intercept_)
    if len(present) == 2:
        # One row for the second class's log-odds; softmax([0, z]) is the logistic sigmoid of z.
        bias[present] = 0.0
        weight[present[1]], bias[present[1]] = coef[0], intercept[0]
    else:
        weight[present], bias[present] = coef, intercept
    return fitted, weight, bias
