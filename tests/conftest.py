"""Shared fixtures: small real FITS/Parquet files, built here rather than mocked."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import fitsio
import numpy as np
import pytest


def _find_own_slurm() -> None:
    """Point the SLURM clients at relabel's own SLURM (.ci/slurm-up) when no SLURM_CONF is set.

    .ci/run sources the file .ci/slurm-up writes; a developer who ran ``sudo bash .ci/slurm-up``
    and then ``python -m pytest`` gets the same controller, instead of skipped SLURM tests.
    """
    env = Path(os.environ.get("RELABEL_SLURM_DIR", "/var/tmp/relabel-slurm")) / "env"
    if "SLURM_CONF" in os.environ or not env.is_file():
        return
    line = env.read_text().strip()
    if line.startswith("export SLURM_CONF=") and Path(line.split("=", 1)[1]).is_file():
        os.environ["SLURM_CONF"] = line.split("=", 1)[1]


_find_own_slurm()

WORKFLOW_YAML = textwrap.dedent(
    """\
    name: tiny
    catalog: {path: catalog.fits, hdu: 1, id: OBJID, ra: RA, dec: DEC, passthrough: [MAG_R]}
    labels:
      probabilities:
        - {column: P_EL, class: elliptical, threshold: 0.8}
        - {column: P_CS, class: spiral, threshold: 0.8}
    intrinsic: [ABS_MAG, R50_KPC]
    observables:
      - {column: RESOLUTION, best: high}
      - {column: REDSHIFT, best: low}
    cutouts: {layout: tiles, root: ., size: 16, bands: [r]}
    """
)


@pytest.fixture(autouse=True)
def _no_leaked_dask_scheduler():
    """Each test starts without a global Dask scheduler: a Client that fails to connect leaves
    ``scheduler='dask.distributed'`` set, which would break later tests' ``compute()``."""
    import dask

    before = dask.config.get("scheduler", None)
    yield
    if before is None:
        dask.config.config.pop("scheduler", None)


def write_tiny_catalog(path: Path, n: int = 40, seed: int = 0) -> np.ndarray:
    """A catalog in the simulator's column layout with random values, tiles of 16 rows."""
    rng = np.random.default_rng(seed)
    data = np.zeros(
        n,
        dtype=[
            ("OBJID", ">i8"), ("RA", ">f8"), ("DEC", ">f8"), ("P_EL", ">f4"), ("P_CS", ">f4"),
            ("ABS_MAG", ">f4"), ("R50_KPC", ">f4"), ("RESOLUTION", ">f4"), ("REDSHIFT", ">f4"),
            ("MAG_R", ">f4"), ("TILE", "S32"), ("TILE_INDEX", ">i4"),
        ],
    )
    data["OBJID"] = 1000 + np.arange(n)
    data["RA"] = rng.uniform(0, 360, n)
    data["DEC"] = rng.uniform(-30, 30, n)
    p = rng.uniform(0, 1, n).astype("f4")
    data["P_EL"], data["P_CS"] = p, 1 - p
    for col in ("ABS_MAG", "R50_KPC", "RESOLUTION", "REDSHIFT", "MAG_R"):
        data[col] = rng.normal(size=n)
    data["TILE"] = [f"tiles/tile_{i // 16:05d}.fits".encode() for i in range(n)]
    data["TILE_INDEX"] = np.arange(n) % 16
    fitsio.write(str(path), data, extname="CATALOG", clobber=True)
    return data


def write_tiles(root: Path, n: int = 40, size: int = 16, seed: int = 0) -> np.ndarray:
    """Tile cubes (n_i, 1, size, size) matching :func:`write_tiny_catalog`'s TILE/TILE_INDEX."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, 1, size, size)).astype(np.float32)
    (root / "tiles").mkdir(parents=True, exist_ok=True)
    for t in range(0, n, 16):
        fitsio.write(str(root / "tiles" / f"tile_{t // 16:05d}.fits"), images[t : t + 16], clobber=True)
    return images


@pytest.fixture
def tiny_survey(tmp_path: Path):
    """A 40-row catalog, its tiles of 16x16 cutouts and a workflow file, in tmp_path."""
    data = write_tiny_catalog(tmp_path / "catalog.fits")
    images = write_tiles(tmp_path)
    (tmp_path / "workflow.yaml").write_text(WORKFLOW_YAML)
    return tmp_path, data, images


def write_untrained_checkpoint(path: Path, size: int = 16, seed: int = 0, workflow: dict | None = None,
                               metrics: dict | None = None, method: str = "biased") -> Path:
    """A small untrained network saved as a real checkpoint: pipeline tests need a model, not a good one."""
    import torch
    import yaml

    from relabel.model import CheckpointMeta, MorphologyCNN, save_checkpoint

    torch.manual_seed(seed)
    arch = {"name": "MorphologyCNN", "n_bands": 1, "n_classes": 2, "width": 8}
    net = MorphologyCNN(1, 2, width=8)
    meta = CheckpointMeta(
        classes=["elliptical", "spiral"], bands=["r"], size=size,
        normalisation={"name": "arcsinh", "offset": [0.0], "scale": [1.0]}, architecture=arch,
        workflow=workflow if workflow is not None else yaml.safe_load(WORKFLOW_YAML), metrics=metrics or {},
        method=method,
    )
    save_checkpoint(net, meta, path)
    return path


@pytest.fixture
def tiny_run(tiny_survey):
    """The tiny survey plus an untrained checkpoint for it."""
    root, data, images = tiny_survey
    model = write_untrained_checkpoint(root / "model.pt")
    return root, data, images, model


@pytest.fixture(scope="session")
def small_survey(tmp_path_factory):
    """A 600-galaxy simulated survey (tiles layout), shared by the tests that need realistic images."""
    from relabel.simulate import simulate_survey

    return simulate_survey(tmp_path_factory.mktemp("survey") / "sim", n=600, seed=7, workers=2, progress=False)


@pytest.fixture(scope="session")
def small_model(small_survey, tmp_path_factory):
    """A briefly trained biased model of the small survey: real weights, not a good classifier."""
    from relabel.train import train_model

    out = tmp_path_factory.mktemp("model") / "biased.pt"
    return train_model(small_survey.catalog, small_survey.workflow, "biased", out, epochs=1, width=4,
                       progress=False).path


def write_wcs_image(path: Path, data: np.ndarray, wcs, **kwargs) -> None:
    """A survey image with its celestial WCS written as a CD matrix (what many surveys ship; astropy writes
    PCi_j + CDELTi). ``kwargs`` go to fitsio.write (e.g. ``compress="gzip"``)."""
    header = [{"name": c.keyword, "value": c.value} for c in wcs.to_header().cards
              if c.keyword and not c.keyword.startswith(("PC", "CDELT", "DATEREF", "MJDREF"))]
    header += [{"name": f"CD{i + 1}_{j + 1}", "value": float(wcs.wcs.cd[i, j])} for i in range(2) for j in range(2)]
    fitsio.write(str(path), data, header=header, clobber=True, **kwargs)


def write_images_catalog(root: Path, table, values, size: int = 16) -> dict:
    """``root/catalog.parquet`` from ``table`` (RA, DEC, IMAGE, OBJID) with the workflow's other columns
    filled by ``values(n)``, and ``root/images.yaml``, layout images at 0.396 arcsec/pixel; returns the
    workflow as a dict."""
    import yaml

    for col in ("P_EL", "P_CS", "ABS_MAG", "R50_KPC", "RESOLUTION", "REDSHIFT", "MAG_R"):
        table[col] = values(len(table))
    table.to_parquet(root / "catalog.parquet")
    raw = yaml.safe_load(WORKFLOW_YAML)
    raw["cutouts"] = {"layout": "images", "root": ".", "image_column": "IMAGE", "size": size, "bands": ["r"],
                      "pixel_scale": 0.396}
    (root / "images.yaml").write_text(yaml.safe_dump(raw))
    return raw
