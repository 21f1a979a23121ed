"""Workflow files: how a survey's catalog, labels, cutouts and run options map to relabel.

A workflow file is YAML (see ``docs/conventions.md`` and ``workflows/``). Paths in it
are relative to the file's own folder. :func:`load_workflow` validates everything a
later step relies on, so a typo fails here with the file and the key named, not
an hour into a cluster run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from relabel.catalog.missing import parse_missing_codes
from relabel.errors import ConfigError
from relabel.schema import REQUIRED, as_mapping, defaults, parse_section, schema_markdown, setting

BEST_ENDS = ("low", "high")
LAYOUTS = ("tiles", "files", "images")
CLUSTER_KINDS = ("local", "slurm", "pbs", "sge", "lsf", "htcondor", "none")
JOB_QUEUES = ("slurm", "pbs", "sge", "lsf", "htcondor")


@dataclass(frozen=True)
class ProbabilityLabel:
    """One class defined by a vote-fraction column passing a threshold."""

    column: str = setting(REQUIRED, "vote-fraction column")
    name: str = setting(REQUIRED, "class name", key="class")
    threshold: float = setting(REQUIRED, "the object is this class when the column is >= it", minimum=0, maximum=1)


@dataclass(frozen=True)
class Observable:
    """An observing-condition column and which end of it is the best quality."""

    column: str = setting(REQUIRED, "observing-condition column")
    best: str = setting(REQUIRED, "the best-quality end of the column", choices=BEST_ENDS)


#: Threshold comparisons a workflow may ask for (``labels.compare``).
COMPARISONS = (">=", ">")


@dataclass
class LabelSpec:
    """How a catalog's columns become one class label per object.

    Either ``probabilities`` (thresholded vote fractions, Galaxy Zoo style) or a
    categorical ``label_column`` with its ``classes`` in order.
    """

    probabilities: list[ProbabilityLabel] = setting([], "class <- probability column >= threshold (later column wins)")
    label_column: str | None = setting(None, "alternative: one categorical label column ...")
    classes: list[str] = setting([], "... with these values, in this order")
    keep_uncertain: bool = setting(False, "objects passing no threshold form a class 'uncertain'")
    compare: str = setting(
        ">=", "vote fraction vs threshold: '>=' (the metric's authors) or '>' (Galaxy Zoo 1's flags)",
        choices=COMPARISONS)

    @property
    def class_names(self) -> list[str]:
        """Class names in code order (``uncertain`` last when it is kept)."""
        names = [p.name for p in self.probabilities] if self.probabilities else list(self.classes)
        if self.keep_uncertain and self.probabilities:
            names.append("uncertain")
        return names

    @property
    def columns(self) -> list[str]:
        """Catalog columns the labels are read from."""
        if self.probabilities:
            return [p.column for p in self.probabilities]
        return [self.label_column] if self.label_column else []

    @property
    def thresholds(self) -> list[float]:
        """The threshold of each probability column, in class order (empty for a label column)."""
        return [p.threshold for p in self.probabilities]


@dataclass
class CatalogSpec:
    """Where the catalog is and which columns identify and place each galaxy."""

    path: Path | None = setting(None, "default catalog for commands that take one (~ and $VARIABLES expand)")
    hdu: int | str | None = setting(None, "FITS extension number or EXTNAME (default: the first table HDU)")
    id: str = setting("OBJID", "galaxy id column")
    ra: str = setting("RA", "right ascension column (deg)")
    dec: str = setting("DEC", "declination column (deg)")
    ra_unit: str | None = setting(
        None, "unit of the RA column when the catalog states none (deg, rad, arcsec, hourangle; FITS TUNIT "
        "otherwise); sexagesimal text is read as hours")
    dec_unit: str | None = setting(
        None, "unit of the Dec column when the catalog states none (deg, rad, arcsec); sexagesimal text is read as "
        "degrees")
    passthrough: list[str] = setting([], "extra catalog columns copied to the run output")
    missing: dict[str, Any] = setting({}, "missing-value codes per column, e.g. {REDSHIFT: [-9999], M_R: [99]}")


@dataclass
class CutoutSpec:
    """Where each galaxy's image is: a slice of a tile cube, or a file of its own."""

    layout: str = setting("tiles", "cutouts packed in tile cubes, one file per galaxy (FITS, PNG, JPEG), "
                          "or cut from survey images", choices=LAYOUTS)
    root: Path = setting(Path("."), "folder the tile / file paths in the catalog are relative to (~ and "
                         "$VARIABLES expand, e.g. $SCRATCH/cutouts)")
    tile_column: str = setting("TILE", "layout tiles: tile path column")
    index_column: str = setting("TILE_INDEX", "layout tiles: the cutout's index in the tile's cube")
    path_column: str = setting("CUTOUT", "layout files: one FITS file per galaxy")
    size: int = setting(64, "cutout side (pixels)", above=0)
    bands: list[str] = setting(["r"], "bands along axis 1 of each cube, in this order")
    pixel_scale: float = setting(0.396, "arcsec / pixel", above=0)
    image_column: str | None = setting(None, "layout images: each row's survey image path (may hold {band})")
    image_pattern: str | None = setting(
        None, "layout images without a column: image paths ('*', {band}) matched by WCS footprint")
    pixel_scale_tolerance: float = setting(
        0.02, "layout images: largest relative pixel-scale difference from the checkpoint's", above=0)
    channels: list[str] | None = setting(
        None, "PNG/JPEG stamps: the channel (R, G, B or L) holding each band, in band order")

    @property
    def columns(self) -> list[str]:
        """Catalog columns that locate the cutouts for this layout."""
        if self.layout == "tiles":
            return [self.tile_column, self.index_column]
        if self.layout == "images":
            return [self.image_column] if self.image_column else []
        return [self.path_column]


@dataclass
class BiasSettings:
    """The metric L's binning and uncertainty (Cabrera-Vives et al. 2018)."""

    log2_bins_int: int = setting(4, "depth of the intrinsic k-d tree (2^l bins)", minimum=0)
    bins_obs: int = setting(5, "observable bins per intrinsic bin", above=0)
    n_boot: int = setting(20, "bootstrap repetitions", minimum=0)
    n_per_bin: int | None = setting(None, "subsample n x 2^l x B objects per repetition (null: all)", above=0)
    n_null: int = setting(10, "shuffles for the null L", minimum=0)
    mc_error: float | None = setting(
        0.0005, "target Monte-Carlo error of the excess L: repetitions are added beyond n_boot and n_null "
        "until it is met (null or 0: exactly n_boot and n_null)", minimum=0)
    max_repetitions: int = setting(2000, "most bootstrap and null repetitions together that mc_error may ask for",
                                   above=0)
    seed: int = setting(0, "random seed", minimum=0)


#: ``train.catalog_inputs``: the catalog columns the network also sees (none, or the intrinsic ones).
CATALOG_INPUTS = ("none", "intrinsic")


@dataclass
class TrainSettings:
    """Training of the classifier (``relabel train``)."""

    epochs: int = setting(12, "at most this many epochs", above=0)
    batch_size: int = setting(128, "cutouts per step", above=0)
    lam: float | Literal["automatic"] = setting("automatic", "bias weight, or automatic", key="lambda", minimum=0)
    val_fraction: float = setting(0.25, "share of objects held out for validation", above=0, maximum=0.9)
    seed: int = setting(0, "random seed of the split and the weights", minimum=0)
    degrade_psf_column: str = setting(
        "PSF_FWHM", "augment degrade: the observable holding each galaxy's PSF FWHM (arcsec)")
    degrade_resolution_column: str = setting(
        "RESOLUTION", "augment degrade: the observable holding each galaxy's resolution")
    augment: str = setting("none", "'degrade': well-observed labelled galaxies also shown made to look worse-observed",
                           choices=("none", "degrade"))
    catalog_inputs: str = setting(
        "intrinsic", "'intrinsic': the network also sees each galaxy's intrinsic columns (the catalog gives the "
        "prior); 'none': the cutouts only", choices=CATALOG_INPUTS)


@dataclass
class RunSettings:
    """Re-labelling a catalog (``relabel run``)."""

    shard_size: int = setting(2048, "rows per shard (one Dask task)", above=0)
    batch_size: int = setting(256, "cutouts per forward pass", above=0)


@dataclass
class JobQueueSettings:
    """One job queue's workers (dask-jobqueue); unset keys fall back to the user's ``jobqueue.<queue>`` config."""

    jobs: int | None = setting(None, "fixed number of jobs (default 1; the way for GPU pools)", above=0)
    min_jobs: int | None = setting(None, "adaptive CPU pool: at least this many jobs", minimum=0)
    max_jobs: int | None = setting(None, "adaptive CPU pool: at most this many jobs", above=0)
    queue: str | None = setting(None, "queue / partition")
    account: str | None = setting(None, "account / project to charge")
    walltime: str | None = setting(None, "job walltime, [D-]HH:MM:SS (workers retire before it)")
    cores: int | None = setting(None, "cores per job (default: what a node of the partition has, else 4)", above=0)
    memory: str | None = setting(None, "memory per job, e.g. 32GB (default: the node's, else 15GB)")
    gpus_per_job: int | None = setting(None, "GPUs per job: one worker process per GPU, each GPU=1", minimum=0)
    job_cpu: int | None = setting(None, "CPUs reserved per job, if not cores", above=0)
    job_mem: str | None = setting(None, "memory reserved per job, if not memory")
    interface: str | None = setting(None, "network interface the workers listen on (e.g. ib0)")
    scheduler_interface: str | None = setting(None, "interface the scheduler listens on, reachable from compute nodes")
    scheduler_host: str | None = setting(None, "address the scheduler listens on (default: this host's routable one)")
    python: str | None = setting(None, "Python on the compute nodes (default: `python` after the prologue)")
    job_script_prologue: list[str] | None = setting(
        None, "shell lines before the worker starts (module load, activate)")
    job_extra_directives: list[str] | None = setting(None, "extra #SBATCH/#PBS/... directives")
    worker_extra_args: list[str] | None = setting(None, "extra `dask worker` arguments")
    log_directory: str | None = setting(None, "worker job logs (default OUT/_logs/<queue>)")
    local_directory: str | None = setting(None, "workers' scratch folder")
    tls: bool | None = setting(None, "TLS with temporary credentials (default true)")
    lifetime: str | None = setting(None, "worker --lifetime (default: from the walltime)")
    lifetime_stagger: str | None = setting(None, "worker --lifetime-stagger")
    worker_timeout: int | None = setting(None, "seconds to wait for workers before explaining why (default 300)",
                                         above=0)


@dataclass
class ClusterSettings:
    """Where shards run; the job-queue sections hold that queue's options."""

    kind: str = setting("local", "where shards run", choices=CLUSTER_KINDS)
    slurm: JobQueueSettings = setting(JobQueueSettings(), "SLURM (dask_jobqueue.SLURMCluster)")
    pbs: JobQueueSettings = setting(JobQueueSettings(), "PBS / Torque (dask_jobqueue.PBSCluster)")
    sge: JobQueueSettings = setting(JobQueueSettings(), "SGE (dask_jobqueue.SGECluster)")
    lsf: JobQueueSettings = setting(JobQueueSettings(), "LSF (dask_jobqueue.LSFCluster)")
    htcondor: JobQueueSettings = setting(JobQueueSettings(), "HTCondor (dask_jobqueue.HTCondorCluster)")


@dataclass(kw_only=True)
class WorkflowFile:
    """The top level of a workflow file: one key per section."""

    name: str | None = setting(None, "a name for the survey (default: the file's stem)")
    catalog: CatalogSpec = setting(CatalogSpec(), "the catalog's columns")
    labels: LabelSpec = setting(REQUIRED, "how the catalog's columns become classes")
    intrinsic: list[str] = setting(REQUIRED, "intrinsic-property columns (morphology may depend on them)")
    observables: list[Observable] = setting(REQUIRED, "observing-condition columns (morphology must not)")
    cutouts: CutoutSpec = setting(CutoutSpec(), "where each galaxy's image is")
    bias: BiasSettings = setting(BiasSettings(), "the metric L")
    train: TrainSettings = setting(TrainSettings(), "training")
    run: RunSettings = setting(RunSettings(), "re-labelling")
    cluster: ClusterSettings = setting(ClusterSettings(), "where shards run")


BIAS_DEFAULTS = defaults(BiasSettings)
TRAIN_DEFAULTS = defaults(TrainSettings)
RUN_DEFAULTS = defaults(RunSettings)
CLUSTER_DEFAULTS = {"kind": "local"}


def schema_table() -> str:
    """The Markdown table of every workflow key, as printed in ``docs/conventions.md``."""
    return schema_markdown({"": WorkflowFile})


@dataclass
class Workflow:
    """A validated workflow file. Build with :func:`load_workflow` or :meth:`from_dict`."""

    name: str
    catalog: CatalogSpec
    labels: LabelSpec
    intrinsic: list[str]
    observables: list[Observable]
    cutouts: CutoutSpec
    bias: dict[str, Any]
    train: dict[str, Any]
    run: dict[str, Any]
    cluster: dict[str, Any]
    source: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: dict, base_dir: str | Path = ".", source: str | Path | None = None) -> Workflow:
        """Validate a parsed workflow mapping; relative paths resolve against ``base_dir``.

        Parameters
        ----------
        data : dict
            The parsed YAML mapping.
        base_dir : str or pathlib.Path
            Folder that relative paths (catalog, cutouts root) resolve against.
        source : str or pathlib.Path, optional
            The file it came from, named in messages and kept as ``Workflow.source``.

        Returns
        -------
        Workflow
            Every key checked, defaults filled in, paths absolute.

        Raises
        ------
        ConfigError
            An unknown key (the nearest valid one is suggested), a missing one, a wrong type
            or a value out of range; the message names the file and the dotted key.
        """
        where = str(source) if source is not None else "workflow"
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
        parsed = parse_section(WorkflowFile, data, where, "")
        _check_labels(parsed.labels, where)
        for key in ("intrinsic", "observables"):
            if not getattr(parsed, key):
                raise ConfigError(f"{where}: key '{key}' is missing or empty")
        base = Path(base_dir)
        catalog = parsed.catalog
        catalog.missing = parse_missing_codes(catalog.missing, where)
        if catalog.path is not None:
            catalog.path = base / _expanded(catalog.path, "catalog.path", where)
        parsed.cutouts.root = base / _expanded(parsed.cutouts.root, "cutouts.root", where)
        _check_cutouts(parsed.cutouts, where)
        cluster = as_mapping(parsed.cluster)
        # Only the queue sections the file gives are kept: unset keys must fall through to dask's config.
        cluster = {k: v for k, v in cluster.items() if k == "kind" or k in (data.get("cluster") or {})}
        return cls(
            name=str(parsed.name or Path(where).stem),
            catalog=catalog,
            labels=parsed.labels,
            intrinsic=parsed.intrinsic,
            observables=parsed.observables,
            cutouts=parsed.cutouts,
            bias=as_mapping(parsed.bias),
            train=as_mapping(parsed.train),
            run=as_mapping(parsed.run),
            cluster=cluster,
            source=Path(source) if source is not None else None,
            raw=copy.deepcopy(data),
        )

    @property
    def observable_columns(self) -> list[str]:
        """The observable column names, in workflow order."""
        return [o.column for o in self.observables]

    @property
    def best_ends(self) -> list[str]:
        """The best-quality end (``'low'`` or ``'high'``) of each observable, in workflow order."""
        return [o.best for o in self.observables]

    def hash(self) -> str:
        """A stable digest of the mapping, to refuse resuming a run made with another workflow."""
        text = json.dumps(self.raw, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def _expanded(path: Path, key: str, where: str) -> Path:
    """``~`` and ``$VARIABLE`` / ``${VARIABLE}`` in a workflow path, as a shell would expand them (``$SCRATCH/...``
    on a cluster); a variable that is not set is an error, never a folder literally named ``$SCRATCH``."""
    text = os.path.expandvars(os.path.expanduser(str(path)))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text)
    if unset:
        raise ConfigError(f"{where}: key '{key}' ({path}) uses ${unset[0]}, which is not set in this environment")
    return Path(text)


def load_workflow(path: str | Path) -> Workflow:
    """Read and validate a workflow YAML file.

    Parameters
    ----------
    path : str or pathlib.Path
        The workflow file; relative paths inside it resolve against its folder.

    Returns
    -------
    Workflow
        Its ``source`` is ``path``.

    Raises
    ------
    ConfigError
        The file is missing, not YAML, or a key is missing, unknown or of the wrong type;
        the message names the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"workflow file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return Workflow.from_dict(data or {}, base_dir=path.parent, source=path)


def _check_cutouts(cutouts: CutoutSpec, where: str) -> None:
    """The rules between cutouts keys that a type cannot say (survey images, PNG/JPEG channels)."""
    if cutouts.layout == "images" and not (cutouts.image_column or cutouts.image_pattern):
        raise ConfigError(f"{where}: layout 'images' needs key 'cutouts.image_column' (each row's image) "
                          "or 'cutouts.image_pattern' (images found by their WCS footprints)")
    if cutouts.channels is not None:
        channels = [c.upper() for c in cutouts.channels]
        if any(c not in ("R", "G", "B", "L") for c in channels):
            raise ConfigError(f"{where}: key 'cutouts.channels' must list image channels R, G, B or L (grey), "
                              f"one per band; got {cutouts.channels!r}")
        if len(channels) != len(cutouts.bands):
            raise ConfigError(f"{where}: key 'cutouts.channels' names {len(channels)} channel(s) for "
                              f"{len(cutouts.bands)} band(s) {cutouts.bands}: give one channel per band")
        cutouts.channels = channels


def _check_labels(labels: LabelSpec, where: str) -> None:
    """The rules between label keys that a type cannot say."""
    if bool(labels.probabilities) == bool(labels.label_column):
        raise ConfigError(
            f"{where}: key 'labels' needs exactly one of 'probabilities' (vote-fraction columns with "
            "thresholds) or 'label_column' (with 'classes')"
        )
    if labels.label_column and not labels.classes:
        raise ConfigError(f"{where}: key 'labels.classes' is missing or empty (the values of {labels.label_column})")
    names = [p.name for p in labels.probabilities]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: key 'labels.probabilities' repeats a class name: {names}")
