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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from relabel.errors import ConfigError

BEST_ENDS = ("low", "high")
LAYOUTS = ("tiles", "files")

BIAS_DEFAULTS = {"log2_bins_int": 4, "bins_obs": 5, "n_boot": 20, "n_per_bin": None, "n_null": 10, "seed": 0}
TRAIN_DEFAULTS = {"epochs": 12, "batch_size": 128, "lambda": 10.0, "val_fraction": 0.25, "seed": 0, "augment": "none"}
RUN_DEFAULTS = {"shard_size": 2048, "batch_size": 256}
CLUSTER_DEFAULTS = {"kind": "local"}


@dataclass(frozen=True)
class ProbabilityLabel:
    """One class defined by a vote-fraction column passing a threshold."""

    column: str
    name: str
    threshold: float


@dataclass(frozen=True)
class Observable:
    """An observing-condition column and which end of it is the best quality."""

    column: str
    best: str  # "low" or "high"


@dataclass
class LabelSpec:
    """How a catalog's columns become one class label per object.

    Either ``probabilities`` (thresholded vote fractions, Galaxy Zoo style) or a
    categorical ``label_column`` with its ``classes`` in order.
    """

    probabilities: list[ProbabilityLabel] = field(default_factory=list)
    label_column: str | None = None
    classes: list[str] = field(default_factory=list)
    keep_uncertain: bool = False

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
        return [p.threshold for p in self.probabilities]


@dataclass
class CatalogSpec:
    """Where the catalog is and which columns identify and place each galaxy."""

    path: Path | None = None
    hdu: int | str = 1
    id: str = "OBJID"
    ra: str = "RA"
    dec: str = "DEC"
    passthrough: list[str] = field(default_factory=list)


@dataclass
class CutoutSpec:
    """Where each galaxy's image is: a slice of a tile cube, or a file of its own."""

    layout: str = "tiles"
    root: Path = Path(".")
    tile_column: str = "TILE"
    index_column: str = "TILE_INDEX"
    path_column: str = "CUTOUT"
    size: int = 64
    bands: list[str] = field(default_factory=lambda: ["r"])
    pixel_scale: float = 0.396

    @property
    def columns(self) -> list[str]:
        """Catalog columns that locate the cutouts for this layout."""
        if self.layout == "tiles":
            return [self.tile_column, self.index_column]
        return [self.path_column]


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
    def from_dict(cls, data: dict, base_dir: str | Path = ".", source: str | Path | None = None) -> "Workflow":
        """Validate a parsed workflow mapping; relative paths resolve against ``base_dir``."""
        where = str(source) if source is not None else "workflow"
        check = _Checker(where)
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
        known = {"name", "catalog", "labels", "intrinsic", "observables", "cutouts", "bias", "train", "run", "cluster"}
        check.no_unknown(data, known, "")
        base = Path(base_dir)

        cat = check.mapping(data.get("catalog", {}), "catalog")
        check.no_unknown(cat, {"path", "hdu", "id", "ra", "dec", "passthrough"}, "catalog")
        hdu = cat.get("hdu", 1)
        if not isinstance(hdu, (int, str)) or isinstance(hdu, bool):
            raise ConfigError(f"{where}: key 'catalog.hdu' must be an extension number or name, got {hdu!r}")
        catalog = CatalogSpec(
            path=(base / cat["path"]) if cat.get("path") else None,
            hdu=hdu,
            id=check.string(cat.get("id", "OBJID"), "catalog.id"),
            ra=check.string(cat.get("ra", "RA"), "catalog.ra"),
            dec=check.string(cat.get("dec", "DEC"), "catalog.dec"),
            passthrough=check.strings(cat.get("passthrough", []), "catalog.passthrough"),
        )

        labels = _parse_labels(check, data.get("labels"))
        intrinsic = check.strings(data.get("intrinsic"), "intrinsic", required=True)
        observables = _parse_observables(check, data.get("observables"))

        cut = check.mapping(data.get("cutouts", {}), "cutouts")
        check.no_unknown(cut, {"layout", "root", "tile_column", "index_column", "path_column", "size", "bands", "pixel_scale"}, "cutouts")
        layout = cut.get("layout", "tiles")
        if layout not in LAYOUTS:
            raise ConfigError(f"{where}: key 'cutouts.layout' must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        cutouts = CutoutSpec(
            layout=layout,
            root=base / str(cut.get("root", ".")),
            tile_column=check.string(cut.get("tile_column", "TILE"), "cutouts.tile_column"),
            index_column=check.string(cut.get("index_column", "TILE_INDEX"), "cutouts.index_column"),
            path_column=check.string(cut.get("path_column", "CUTOUT"), "cutouts.path_column"),
            size=check.positive_int(cut.get("size", 64), "cutouts.size"),
            bands=check.strings(cut.get("bands", ["r"]), "cutouts.bands", required=True),
            pixel_scale=check.positive_float(cut.get("pixel_scale", 0.396), "cutouts.pixel_scale"),
        )

        bias = check.section(data.get("bias"), "bias", BIAS_DEFAULTS)
        for key in ("log2_bins_int", "n_boot", "n_null", "seed"):
            check.non_negative_int(bias[key], f"bias.{key}")
        check.positive_int(bias["bins_obs"], "bias.bins_obs")
        if bias["n_per_bin"] is not None:
            check.positive_int(bias["n_per_bin"], "bias.n_per_bin")
        train = check.section(data.get("train"), "train", TRAIN_DEFAULTS, allow_extra=True)
        run = check.section(data.get("run"), "run", RUN_DEFAULTS, allow_extra=True)
        check.positive_int(run["shard_size"], "run.shard_size")
        check.positive_int(run["batch_size"], "run.batch_size")
        cluster = check.section(data.get("cluster"), "cluster", CLUSTER_DEFAULTS, allow_extra=True)

        return cls(
            name=str(data.get("name", Path(where).stem)),
            catalog=catalog,
            labels=labels,
            intrinsic=intrinsic,
            observables=observables,
            cutouts=cutouts,
            bias=bias,
            train=train,
            run=run,
            cluster=cluster,
            source=Path(source) if source is not None else None,
            raw=copy.deepcopy(data),
        )

    @property
    def observable_columns(self) -> list[str]:
        return [o.column for o in self.observables]

    @property
    def best_ends(self) -> list[str]:
        return [o.best for o in self.observables]

    def hash(self) -> str:
        """A stable digest of the mapping, to refuse resuming a run made with another workflow."""
        text = json.dumps(self.raw, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def load_workflow(path: str | Path) -> Workflow:
    """Read and validate a workflow YAML file.

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


def _parse_labels(check: "_Checker", value: Any) -> LabelSpec:
    lab = check.mapping(value, "labels", required=True)
    check.no_unknown(lab, {"probabilities", "label_column", "classes", "keep_uncertain"}, "labels")
    keep = lab.get("keep_uncertain", False)
    if not isinstance(keep, bool):
        raise ConfigError(f"{check.where}: key 'labels.keep_uncertain' must be true or false, got {keep!r}")
    probs = lab.get("probabilities")
    column = lab.get("label_column")
    if bool(probs) == bool(column):
        raise ConfigError(
            f"{check.where}: key 'labels' needs exactly one of 'probabilities' (vote-fraction columns with "
            "thresholds) or 'label_column' (with 'classes')"
        )
    if column:
        classes = check.strings(lab.get("classes"), "labels.classes", required=True)
        return LabelSpec(label_column=check.string(column, "labels.label_column"), classes=classes, keep_uncertain=keep)
    if not isinstance(probs, list):
        raise ConfigError(f"{check.where}: key 'labels.probabilities' must be a list of {{column, class, threshold}}")
    items = []
    for i, item in enumerate(probs):
        key = f"labels.probabilities[{i}]"
        item = check.mapping(item, key, required=True)
        check.no_unknown(item, {"column", "class", "threshold"}, key)
        for need in ("column", "class", "threshold"):
            if need not in item:
                raise ConfigError(f"{check.where}: key '{key}.{need}' is missing")
        threshold = item["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise ConfigError(f"{check.where}: key '{key}.threshold' must be a number in [0, 1], got {threshold!r}")
        items.append(
            ProbabilityLabel(check.string(item["column"], f"{key}.column"), check.string(item["class"], f"{key}.class"), float(threshold))
        )
    names = [p.name for p in items]
    if len(set(names)) != len(names):
        raise ConfigError(f"{check.where}: key 'labels.probabilities' repeats a class name: {names}")
    return LabelSpec(probabilities=items, keep_uncertain=keep)


def _parse_observables(check: "_Checker", value: Any) -> list[Observable]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{check.where}: key 'observables' must be a non-empty list of {{column, best: low|high}}")
    out = []
    for i, item in enumerate(value):
        key = f"observables[{i}]"
        item = check.mapping(item, key, required=True)
        check.no_unknown(item, {"column", "best"}, key)
        if "column" not in item:
            raise ConfigError(f"{check.where}: key '{key}.column' is missing")
        best = item.get("best")
        if best not in BEST_ENDS:
            raise ConfigError(
                f"{check.where}: key '{key}.best' must be 'low' or 'high' (the best-quality end of "
                f"{item['column']}), got {best!r}"
            )
        out.append(Observable(check.string(item["column"], f"{key}.column"), best))
    return out


class _Checker:
    """Type checks that name the workflow file and the key in their errors."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, key: str, what: str, value: Any) -> None:
        raise ConfigError(f"{self.where}: key '{key}' must be {what}, got {value!r}")

    def mapping(self, value: Any, key: str, required: bool = False) -> dict:
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            if value is None:
                raise ConfigError(f"{self.where}: key '{key}' is missing")
            self.fail(key, "a mapping", value)
        return value

    def no_unknown(self, value: dict, known: set[str], key: str) -> None:
        unknown = sorted(set(value) - known)
        if unknown:
            prefix = f"{key}." if key else ""
            names = ", ".join(f"'{prefix}{u}'" for u in unknown)
            raise ConfigError(f"{self.where}: unknown key {names}; known here: {', '.join(sorted(known))}")

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            self.fail(key, "a non-empty string", value)
        return value

    def strings(self, value: Any, key: str, required: bool = False) -> list[str]:
        if value is None or value == []:
            if required:
                raise ConfigError(f"{self.where}: key '{key}' is missing or empty")
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(key, "a list of column names", value)
        return list(value)

    def positive_int(self, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.fail(key, "a positive integer", value)
        return value

    def non_negative_int(self, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(key, "a non-negative integer", value)
        return value

    def positive_float(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            self.fail(key, "a positive number", value)
        return float(value)

    def section(self, value: Any, key: str, defaults: dict, allow_extra: bool = False) -> dict:
        value = self.mapping(value, key)
        if not allow_extra:
            self.no_unknown(value, set(defaults), key)
        merged = dict(defaults)
        merged.update(value)
        return merged
