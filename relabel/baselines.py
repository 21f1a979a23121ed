"""The field's catalog-level correction of vote fractions (Hart et al. 2016 style), as a baseline.

Galaxy Zoo 2 corrects its vote fractions without looking at the images: in bins of
intrinsic properties and redshift, the distribution of each answer's vote fraction
is mapped onto the one of the best-observed (lowest-redshift) bin of the same
intrinsic properties (Hart et al. 2016, MNRAS 461, 3663, section 3). This module
does that with the workflow's columns: the intrinsic bins are L's k-d tree leaves,
the observable bins L's quantile bins of one observable, and the mapping an
empirical quantile mapping (the paper fits smooth functions to the cumulative
distributions instead; ``docs/baselines.md`` lists every departure).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from relabel.catalog.labels import NO_CLASS, hard_labels
from relabel.catalog.reader import open_catalog
from relabel.config import Workflow, load_workflow
from relabel.errors import ConfigError, OutputError
from relabel.output_columns import probability_column

UNCERTAIN = "uncertain"
#: Status of a row the correction could not use (NaN or inf in one of its columns); its fractions stay NaN.
MISSING_VALUES = "missing_values"


@dataclass
class CorrectionResult:
    """What :func:`debias_catalog` wrote: the output path, its table and counts."""

    path: Path
    table: pd.DataFrame
    summary: dict


def quantile_map(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map ``values`` onto the distribution of ``reference`` by their mid-rank quantile.

    Each value's quantile is its mid-distribution function ``(#below + #equal / 2) / n``
    (vote fractions are counts over a few tens of votes, so ties are the rule), and the
    reference's quantile function is read with Hazen's plotting positions, so a
    sample mapped onto itself is returned unchanged, ties included.

    Parameters
    ----------
    values : numpy.ndarray, shape (n,)
        Vote fractions of one answer in one (intrinsic, observable) bin.
    reference : numpy.ndarray, shape (n_ref,)
        The same answer's fractions in the best-observed bin of the same intrinsic bin.

    Returns
    -------
    numpy.ndarray, shape (n,)

    Examples
    --------
    >>> quantile_map(np.array([0.1, 0.2, 0.2, 0.4]), np.array([0.5, 0.6, 0.6, 0.9])).tolist()
    [0.5, 0.6, 0.6, 0.9]
    """
    values = np.asarray(values, dtype=np.float64)
    ordered = np.sort(values)
    below = np.searchsorted(ordered, values, side="left")
    equal = np.searchsorted(ordered, values, side="right") - below
    quantile = (below + 0.5 * equal) / len(values)
    return np.quantile(np.asarray(reference, dtype=np.float64), quantile, method="hazen")


def catalog_level_correction(fractions, intrinsic, observable, best: str, log2_bins_int: int = 4,
                             bins_obs: int = 5) -> np.ndarray:
    """Vote fractions corrected to the best-observed bin of their intrinsic bin (Hart et al. 2016 style).

    Procedure: the objects are split into ``2**log2_bins_int`` intrinsic bins (L's k-d
    tree of median splits) and, inside each, into ``bins_obs`` equal-count bins of the
    observable (L's binning; the reference bin is the ``best`` end). In each
    (intrinsic, observable) bin, each answer's fractions are quantile-mapped onto that
    answer's fractions in the reference bin (:func:`quantile_map`); the reference bin
    is left as it is. Each object's corrected fractions are then rescaled to the sum
    its original fractions had (Hart et al. renormalise each question to one; here the
    answers not in the table, e.g. "don't know", keep their share).

    Parameters
    ----------
    fractions : array-like, shape (n, K)
        Vote fractions in [0, 1], one column per answer; no NaN.
    intrinsic : array-like, shape (n, d)
        Intrinsic properties (absolute magnitude, physical size...).
    observable : array-like, shape (n,)
        The observing-condition column the correction removes the dependence on.
    best : {"low", "high"}
        The observable's best-quality end (``low`` for redshift, ``high`` for resolution).
    log2_bins_int, bins_obs : int
        Binning, as for L.

    Returns
    -------
    numpy.ndarray, shape (n, K), float64

    Raises
    ------
    BiasError
        An intrinsic bin holds fewer objects than ``bins_obs``.
    """
    from relabel.bias.metric import reference_bin
    from relabel.train.penalty import penalty_cells

    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.ndim == 1:
        fractions = fractions[:, None]
    leaf, obs_bin = penalty_cells(intrinsic, np.asarray(observable)[:, None], [best], log2_bins_int, bins_obs)
    obs_bin = obs_bin[:, 0]
    best_bin = reference_bin(best, bins_obs)
    corrected = fractions.copy()
    for node in np.unique(leaf):
        in_leaf = leaf == node
        reference = in_leaf & (obs_bin == best_bin)
        for b in range(bins_obs):
            cell = in_leaf & (obs_bin == b)
            if b == best_bin or not cell.any():
                continue
            for k in range(fractions.shape[1]):
                corrected[cell, k] = quantile_map(fractions[cell, k], fractions[reference, k])
    total, total_corrected = fractions.sum(axis=1), corrected.sum(axis=1)
    scale = np.divide(total, total_corrected, out=np.ones_like(total), where=total_corrected > 0)
    # Rounding may leave a fraction a hair outside [0, 1], which label thresholds refuse.
    return np.clip(corrected * scale[:, None], 0.0, 1.0)


def debias_catalog(
    catalog_path, workflow, out, overwrite: bool = False, observable: str | None = None
) -> CorrectionResult:
    """``relabel debias-catalog``: the catalog-level correction of a catalog's vote fractions, to Parquet.

    The output has the id, the intrinsic and observable columns, the original fraction
    columns, the corrected fractions ``p_<class>``, ``label`` (the workflow's thresholds
    applied to the corrected fractions; ``uncertain`` when none passes),
    ``label_original`` (the same on the original fractions) and ``status`` (``ok``, or
    ``missing_values`` for a row with NaN/inf in a used column: its ``p_`` are NaN).

    Parameters
    ----------
    catalog_path
        FITS or Parquet catalog.
    workflow
        :class:`relabel.config.Workflow` or the path of a workflow file; its labels
        must be vote-fraction columns with thresholds.
    out
        Parquet file to write.
    overwrite
        Replace an existing ``out``.
    observable
        Observable column to correct along (default: the workflow's first observable).

    Raises
    ------
    OutputError
        ``out`` exists and ``overwrite`` is false.
    ConfigError
        The workflow's labels are a categorical column, or ``observable`` is not one of its observables.
    CatalogError
        Missing or non-numeric columns.
    """
    if not isinstance(workflow, Workflow):
        workflow = load_workflow(workflow)
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists; use --overwrite to replace it")
    if not workflow.labels.probabilities:
        raise ConfigError(f"workflow {workflow.source or workflow.name}: the catalog-level correction needs vote "
                          "fractions ('labels.probabilities'), not a categorical 'labels.label_column'")
    names = {o.column: o.best for o in workflow.observables}
    observable = observable or workflow.observables[0].column
    if observable not in names:
        raise ConfigError(f"observable {observable!r} is not one of the workflow's observables {list(names)}")
    fraction_columns = workflow.labels.columns
    numeric = list(dict.fromkeys([*fraction_columns, *workflow.intrinsic, *workflow.observable_columns]))
    catalog = open_catalog(catalog_path, hdu=workflow.catalog.hdu)
    columns = list(dict.fromkeys([workflow.catalog.id, *numeric]))
    catalog.require(columns, numeric=numeric, what="the catalog-level correction")
    table = catalog.read_all(columns).reset_index(drop=True)

    values = table[numeric].to_numpy(dtype=np.float64)
    usable = np.isfinite(values).all(axis=1)
    corrected = np.full((len(table), len(fraction_columns)), np.nan)
    bias = workflow.bias
    corrected[usable] = catalog_level_correction(
        table.loc[usable, fraction_columns], table.loc[usable, workflow.intrinsic], table.loc[usable, observable],
        names[observable], bias["log2_bins_int"], bias["bins_obs"])
    frame = table.copy()
    classes = [p.name for p in workflow.labels.probabilities]
    for k, name in enumerate(classes):
        frame[probability_column(name)] = corrected[:, k].astype(np.float32)
    frame["label"] = _label_names(corrected, usable, workflow)
    frame["label_original"] = _label_names(table[fraction_columns].to_numpy(dtype=np.float64), usable, workflow)
    frame["status"] = np.where(usable, "ok", MISSING_VALUES)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    tmp.replace(out)
    summary = {"rows": int(len(frame)), "corrected": int(usable.sum()), "missing_values": int((~usable).sum()),
               "observable": observable, "bins": f"{2 ** bias['log2_bins_int']} x {bias['bins_obs']}",
               "label_counts": frame["label"].value_counts().to_dict(),
               "label_original_counts": frame["label_original"].value_counts().to_dict(), "out": str(out)}
    return CorrectionResult(out, frame, summary)


def _label_names(fractions: np.ndarray, usable: np.ndarray, workflow: Workflow) -> np.ndarray:
    names = np.full(len(fractions), None, dtype=object)
    spec = workflow.labels
    columns = {p.column: fractions[usable, k] for k, p in enumerate(spec.probabilities)}
    codes = hard_labels(columns, spec.thresholds, keep_uncertain=False)
    known = np.asarray([p.name for p in spec.probabilities] + [UNCERTAIN], dtype=object)
    names[usable] = known[np.where(codes == NO_CLASS, len(spec.probabilities), codes)]
    return names
