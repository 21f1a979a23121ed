"""The classifier: network, input normalisation, checkpoint format, device policy, batch prediction."""

from relabel.model.checkpoint import CheckpointMeta, load_checkpoint, read_checkpoint, save_checkpoint
from relabel.model.device import autocast_for, choose_device
from relabel.model.network import MorphologyCNN, build_model
from relabel.model.normalisation import estimate_normalisation, normalise
from relabel.model.predict import dihedral_augment, predict_proba, preprocess

__all__ = ["CheckpointMeta", "MorphologyCNN", "autocast_for", "build_model", "choose_device", "dihedral_augment",
           "estimate_normalisation", "load_checkpoint", "normalise", "predict_proba", "preprocess",
           "read_checkpoint", "save_checkpoint"]
