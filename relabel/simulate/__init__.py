"""The GalSim survey simulator: galaxies with known true morphology and human-like biased labels."""

from relabel.simulate.survey import SurveyPaths, distances, simulate_galaxies, simulate_survey

__all__ = ["SurveyPaths", "distances", "simulate_galaxies", "simulate_survey"]
