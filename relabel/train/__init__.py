"""Training a biased or de-biased classifier: split, data, the bias penalty, the epoch loop."""

from relabel.train.data import LabelledCutouts, load_labelled_cutouts, read_table
from relabel.train.loop import TrainResult, train_model
from relabel.train.penalty import BiasPenalty, penalty_cells
from relabel.train.split import validation_mask

__all__ = ["BiasPenalty", "LabelledCutouts", "TrainResult", "load_labelled_cutouts", "penalty_cells", "read_table",
           "train_model", "validation_mask"]
