"""The GalSim survey simulator: galaxies with known true morphology and human-like biased labels."""

from relabel.simulate.presets import PRESETS, SurveyPreset, get_preset
from relabel.simulate.survey import SurveyPaths, distances, simulate_galaxies, simulate_survey

__all__ = ["PRESETS", "SurveyPaths", "SurveyPreset", "distances", "get_preset", "simulate_galaxies",
           "simulate_survey"]
