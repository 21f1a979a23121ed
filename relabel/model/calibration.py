"""Calibrated probabilities: temperature scaling, the expected calibration error, reliability-diagram data.

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks",
ICML, section 4.2) divides the logits by one scalar T > 0 fitted by minimising the
negative log-likelihood on held-out objects; the argmax, hence every label, is
unchanged. relabel fits T, without any truth, on the validation split's confident
labels in the best-observed bins (where the labels are nearest the truth), each
galaxy also seen at observing conditions drawn from the survey's (degraded as
:mod:`relabel.train.augment` does), records it in the checkpoint, and applies it
at inference. The expected calibration error is the
top-label ECE of Naeini et al. 2015 (AAAI) as Guo et al. use it: equal-width
confidence bins, sum over bins of (bin share) x |accuracy - mean confidence|.
"""

from __future__ import annotations

from dataclasses import dataclass

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


#: Observing conditions drawn per best-observed galaxy when the temperature is fitted.
CONDITION_DRAWS = 8

#: Largest change of the predicted class shares between the best-observed galaxies as observed and the same
#: galaxies seen at the survey's conditions for those views to be used (the tolerance of the acceptance
#: criterion on class fractions, and of the trainer's settlement).
SHARE_SHIFT_TOLERANCE = 0.05


@dataclass
class ValidationCalibration:
    """The temperature :func:`calibrate_on_validation` chose, and why.

    Attributes
    ----------
    temperature : float
        T to record in the checkpoint.
    views : str
        ``"survey conditions"`` (the degraded views), ``"as observed"``, or ``"none"``
        (no confident validation labels: T = 1).
    temperature_observed, temperature_conditions : float or None
        T fitted on the galaxies as observed, and on their degraded views (None when not made).
    share_shift : float or None
        Largest absolute change of a predicted class share (argmax) from the galaxies as
        observed to their degraded views.
    n_galaxies : int
        Best-observed confident validation galaxies used.
    """

    temperature: float
    views: str
    temperature_observed: float | None = None
    temperature_conditions: float | None = None
    share_shift: float | None = None
    n_galaxies: int = 0


def calibrate_on_validation(model: torch.nn.Module, data, rows: np.ndarray, workflow, log2_bins_int: int,
                            bins_obs: int, draws: int = CONDITION_DRAWS,
                            tolerance: float = SHARE_SHIFT_TOLERANCE) -> ValidationCalibration:
    """Temperature fitted on the best-observed validation galaxies, seen at the survey's observing conditions.

    No truth is used. The galaxies are the validation rows with a confident label in
    the best-observed bins (L's reference bin of the first observable, inside each
    intrinsic leaf, binned on the validation rows; all confident validation rows when
    the bins cannot be formed or hold fewer than 20): there the labels are nearest the
    truth. Each is then shown ``draws`` times at the observing conditions of a
    validation galaxy drawn at random (the survey's own distribution), degraded as
    :mod:`relabel.train.augment` degrades (wider PSF, smaller, sky noise) when that
    galaxy is worse resolved, and keeps its label, as a galaxy keeps its class however
    it is observed. T minimises the negative log-likelihood over all these views.

    Why: a de-biased network's accuracy hardly depends on resolution while its
    confidence falls with it, so a T fitted on the best-observed galaxies alone (where
    it is over-confident) softens it everywhere, also where it is under-confident; see
    docs/baselines.md, "Calibration".

    The views are used only when the network gives them about the class shares it
    gives the same galaxies as observed (within ``tolerance``): a galaxy's class does not
    change with how it is observed, and a de-biased network's shares do not either on
    the survey's own galaxies. A larger shift says the degraded views are not what the
    network sees at those conditions (a network not trained on them may read the
    degradation as structure: at 24,000 galaxies one called 38 % of the degraded
    ellipticals spiral, and their T of 4.2 made the survey's ECE 0.15), or that the
    network is biased; T is then fitted on the galaxies as observed. Without the
    workflow's degradation columns (``train.degrade_psf_column``,
    ``train.degrade_resolution_column``), with ``draws`` 0, or for a network that also
    takes the catalog's intrinsic columns, the galaxies are used as observed.

    Parameters
    ----------
    model : torch.nn.Module
    data : relabel.train.data.LabelledCutouts
    rows : numpy.ndarray of int
        The validation rows of ``data``.
    workflow : relabel.config.Workflow
    log2_bins_int, bins_obs : int
        L's bins (the reference bin).
    draws : int
        Observing conditions per galaxy; 0: the galaxies only as observed (T of the best-observed bins).
    tolerance : float
        Largest class-share shift, as observed to degraded, for the degraded views to be used.

    Returns
    -------
    ValidationCalibration
    """
    from relabel.model.inputs import rows_inputs
    from relabel.model.network import catalog_inputs
    from relabel.model.predict import predict_proba

    rows = np.asarray(rows)
    chosen = _best_observed_rows(data, rows, workflow, log2_bins_int, bins_obs)
    if len(chosen) == 0:
        return ValidationCalibration(1.0, "none")
    labels = data.codes[chosen]
    n_classes = len(data.classes)
    images = torch.from_numpy(np.ascontiguousarray(data.images[chosen]))
    # log p differs from the logits by one constant per row, which softmax(. / T) ignores.
    inputs = rows_inputs(model, data.intrinsic, chosen)
    observed = np.log(np.clip(predict_proba(model, images, inputs=inputs), 1e-300, None))
    t_observed = fit_temperature(observed, labels)
    # A network that also takes the catalog's intrinsic columns is not shown degraded views: a degraded
    # bright, nearby galaxy keeps its intrinsic values, a pairing the survey hardly holds, and on the deep
    # preset the T fitted on such views (0.97, 1.25) gave an ECE of 0.046 and 0.070 against the truth.
    degrader = None if catalog_inputs(model) else _condition_sampler(data, rows, chosen, workflow, seed=data.seed)
    if degrader is None or draws == 0:
        return ValidationCalibration(t_observed, "as observed", t_observed, n_galaxies=len(chosen))
    views = np.concatenate([np.log(np.clip(predict_proba(model, degrader(images, chosen), inputs=inputs), 1e-300,
                                           None))
                            for _ in range(draws)])
    t_conditions = fit_temperature(views, np.tile(labels, draws))
    shift = float(np.abs(_class_shares(views, n_classes) - _class_shares(observed, n_classes)).max())
    chosen_views = "survey conditions" if shift <= tolerance else "as observed"
    return ValidationCalibration(t_conditions if shift <= tolerance else t_observed, chosen_views, t_observed,
                                 t_conditions, shift, len(chosen))


def fit_validation_temperature(model: torch.nn.Module, data, rows: np.ndarray, workflow, log2_bins_int: int,
                               bins_obs: int, draws: int = CONDITION_DRAWS) -> float:
    """The temperature of :func:`calibrate_on_validation` (same parameters); T = 1 without confident labels.

    Returns
    -------
    float
    """
    return calibrate_on_validation(model, data, rows, workflow, log2_bins_int, bins_obs, draws).temperature


def _class_shares(log_p: np.ndarray, n_classes: int) -> np.ndarray:
    """Share of the rows whose argmax is each class."""
    return np.bincount(log_p.argmax(axis=1), minlength=n_classes) / max(len(log_p), 1)


def _best_observed_rows(data, rows: np.ndarray, workflow, log2_bins_int: int, bins_obs: int) -> np.ndarray:
    """The confident validation rows in the reference bin of the first observable (all confident ones if < 20)."""
    from relabel.bias.metric import BiasError, reference_bin
    from relabel.train.penalty import penalty_cells

    confident = data.codes[rows] >= 0
    ends = [o.best for o in workflow.observables]
    try:
        _, obs_bin = penalty_cells(data.intrinsic.iloc[rows], data.observables.iloc[rows], ends, log2_bins_int,
                                   bins_obs)
        reference = obs_bin[:, 0] == reference_bin(ends[0], bins_obs)
    except BiasError:
        reference = np.ones(len(rows), dtype=bool)
    chosen = rows[confident & reference]
    if len(chosen) < 20:
        chosen = rows[confident]
    return np.sort(chosen)


def _condition_sampler(data, rows: np.ndarray, chosen: np.ndarray, workflow, seed: int):
    """A :class:`relabel.train.augment.Degrader` giving each ``chosen`` galaxy a random validation galaxy's
    conditions (when worse resolved), or None when the workflow has no PSF and resolution observables."""
    from relabel.train.augment import Degrader

    options = workflow.train
    psf = options.get("degrade_psf_column", "PSF_FWHM")
    resolution = options.get("degrade_resolution_column", "RESOLUTION")
    if psf not in data.observables.columns or resolution not in data.observables.columns:
        return None
    source = np.zeros(len(data), dtype=bool)
    source[chosen] = True
    degrader = Degrader(data.observables[psf].to_numpy(), data.observables[resolution].to_numpy(), source, rows,
                        workflow.cutouts.pixel_scale, seed=seed, probability=1.0)
    degrader.source = source  # every chosen galaxy, whatever the median resolution of the donors
    return degrader
