"""Calibrated probabilities: temperature scaling, the expected calibration error, reliability-diagram data.

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks",
ICML, section 4.2) divides the logits by one scalar T > 0 fitted by minimising the
negative log-likelihood on held-out objects; the argmax, hence every label, is
unchanged. relabel fits T on the validation split's confident labels in the
best-observed bins, where the labels are nearest the truth, records it in the
checkpoint, and applies it at inference. The expected calibration error is the
top-label ECE of Naeini et al. 2015 (AAAI) as Guo et al. use it: equal-width
confidence bins, sum over bins of (bin share) x |accuracy - mean confidence|.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

#: Search range of log(T): T from 0.05 to 20.
LOG_T_RANGE = (-3.0, 3.0)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the mean negative log-likelihood of ``softmax(logits / T)``.

    Parameters
    ----------
    logits : numpy.ndarray, shape (n, K)
    labels : numpy.ndarray of int, shape (n,)
        Class codes in 0..K-1.

    Returns
    -------
    float
        T (1.0 when there are no objects).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(0.0, 2.0, 20000)              # calibrated log-odds of class 1
    >>> y = (rng.random(20000) < 1 / (1 + np.exp(-z))).astype(int)
    >>> round(fit_temperature(np.stack([np.zeros(20000), 3.0 * z], 1), y), 1)   # logits 3x too confident
    3.0
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(labels)), labels].mean())

    result = minimize_scalar(nll, bounds=LOG_T_RANGE, method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities ``softmax(logits / T)``, shape (n, K).

    Parameters
    ----------
    logits : numpy.ndarray, shape (n, K)
        Network outputs (or log-probabilities: softmax ignores a constant per row).
    temperature : float
        T > 0; T > 1 softens over-confident probabilities (Guo et al. 2017, section 4.2).

    Returns
    -------
    numpy.ndarray of float64, shape (n, K)
    """
    return softmax(np.asarray(logits, dtype=np.float64) / float(temperature), axis=1)


def reliability_diagram(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> dict:
    """Data of a reliability diagram and its expected calibration error (top-label, equal-width bins).

    Parameters
    ----------
    probabilities : numpy.ndarray, shape (n, K)
        Predicted class probabilities (rows sum to 1).
    labels : numpy.ndarray of int, shape (n,)
        True class codes (the simulator's truth, or trusted labels).
    n_bins : int
        Equal-width bins of the confidence (the top probability) on [0, 1].

    Returns
    -------
    dict
        ``edges`` (n_bins + 1), and per bin ``confidence`` (mean top probability),
        ``accuracy`` (share whose top class is right) and ``count`` (None for
        empty bins' means); ``ece``; ``n``. Plain lists, ready for JSON or a plot.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    confidence = probabilities.max(axis=1) if len(probabilities) else np.zeros(0)
    right = probabilities.argmax(axis=1) == labels if len(probabilities) else np.zeros(0, dtype=bool)
    edges = np.arange(n_bins + 1) / n_bins  # k / n exactly: 0.6 is an edge, not 0.6000000000000001
    # A confidence of exactly 1 belongs to the last bin.
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=n_bins)
    right_sum = np.bincount(which, weights=right.astype(float), minlength=n_bins)
    filled = count > 0
    mean_conf = np.where(filled, conf_sum / np.maximum(count, 1), np.nan)
    accuracy = np.where(filled, right_sum / np.maximum(count, 1), np.nan)
    n = int(len(labels))
    ece = float(np.sum(count[filled] / n * np.abs(accuracy[filled] - mean_conf[filled]))) if n else float("nan")

    def listed(values):
        return [None if not np.isfinite(v) else float(v) for v in values]

    return {"edges": edges.tolist(), "confidence": listed(mean_conf), "accuracy": listed(accuracy),
            "count": count.astype(int).tolist(), "ece": ece, "n": n}


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """Top-label expected calibration error (Naeini et al. 2015; Guo et al. 2017, eq. 3) in ``n_bins`` bins.

    Parameters
    ----------
    probabilities : numpy.ndarray, shape (n, K)
        Class probabilities of each object.
    labels : numpy.ndarray of int, shape (n,)
        True class codes 0..K-1.
    n_bins : int
        Equal-width confidence bins over [0, 1].

    Returns
    -------
    float
        ECE in [0, 1]; NaN when ``n`` is 0.
    """
    return reliability_diagram(probabilities, labels, n_bins)["ece"]


def fit_validation_temperature(model: torch.nn.Module, data, rows: np.ndarray, workflow, log2_bins_int: int,
                               bins_obs: int) -> float:
    """Temperature fitted on the confident labels of the validation rows in the best-observed bins.

    The best-observed bins are L's reference bins (the best end of each observable,
    inside each intrinsic leaf, binned on the validation rows); an object counts when
    it is in the reference bin of the first observable. Falls back to all confident
    validation rows when the bins cannot be formed or hold fewer than 20 of them.

    Parameters
    ----------
    model : torch.nn.Module
    data : relabel.train.data.LabelledCutouts
    rows : numpy.ndarray of int
        The validation rows of ``data``.
    workflow : relabel.config.Workflow
    log2_bins_int, bins_obs : int

    Returns
    -------
    float
    """
    from relabel.bias.metric import BiasError
    from relabel.train.penalty import penalty_cells

    rows = np.asarray(rows)
    confident = data.codes[rows] >= 0
    ends = [o.best for o in workflow.observables]
    try:
        _, obs_bin = penalty_cells(data.intrinsic.iloc[rows], data.observables.iloc[rows], ends, log2_bins_int,
                                   bins_obs)
        reference = obs_bin[:, 0] == (0 if ends[0] == "low" else bins_obs - 1)
    except BiasError:
        reference = np.ones(len(rows), dtype=bool)
    chosen = rows[confident & reference]
    if len(chosen) < 20:
        chosen = rows[confident]
    from relabel.model.predict import predict_proba

    chosen = np.sort(chosen)
    probabilities = predict_proba(model, torch.from_numpy(np.ascontiguousarray(data.images[chosen])))
    # log p differs from the logits by one constant per row, which softmax(. / T) ignores.
    return fit_temperature(np.log(np.clip(probabilities, 1e-300, None)), data.codes[chosen])
