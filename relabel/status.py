"""The per-galaxy status values of a run: why a row has, or has no, new probabilities.

A fault in one galaxy's cutout or coordinates is recorded on that row and never
fails its shard; the run summary counts rows per status.
"""

OK = "ok"
NAN_FILLED = "nan_filled"
MISSING_FILE = "missing_file"
CORRUPT_FILE = "corrupt_file"
EMPTY_HDU = "empty_hdu"
WRONG_SHAPE = "wrong_shape"
WRONG_BANDS = "wrong_bands"
BAD_INDEX = "bad_index"
ALL_NAN = "all_nan"
TOO_MANY_NAN = "too_many_nan"
BAD_COORDINATES = "bad_coordinates"
PARTIAL_EDGE = "partial_edge"
OUTSIDE_IMAGE = "outside_image"
MISSING_INPUT = "missing_input"

#: A cutout with at most this share of NaN/inf pixels is kept, its bad pixels set to 0
#: (the sky-subtracted background level), since a few masked pixels (cosmic rays,
#: bad columns) barely change a morphology; more than this and the row gets no prediction.
MAX_NAN_FRACTION = 0.2

DESCRIPTIONS = {
    OK: "predicted",
    NAN_FILLED: f"predicted; up to {MAX_NAN_FRACTION:.0%} NaN/inf pixels were set to 0 (background) first",
    MISSING_FILE: "the cutout's file (tile or per-object file) does not exist",
    CORRUPT_FILE: "the cutout's file is not readable FITS (truncated or corrupt)",
    EMPTY_HDU: "the cutout's file holds no image data",
    WRONG_SHAPE: "the cutout's size differs from the model's input size",
    WRONG_BANDS: "the cutout's number of bands differs from the model's",
    BAD_INDEX: "the row's index into its tile is outside the tile's cube",
    ALL_NAN: "every pixel of the cutout is NaN or inf",
    TOO_MANY_NAN: f"more than {MAX_NAN_FRACTION:.0%} of the cutout's pixels are NaN or inf",
    BAD_COORDINATES: "RA/Dec is missing, not readable as an angle, or outside [-180, 360) x [-90, 90] degrees",
    PARTIAL_EDGE: "predicted; the stamp runs off its survey image and was padded with 0 (background) "
                  "there (column coverage: the share of the stamp on the image)",
    OUTSIDE_IMAGE: "the galaxy's centre lies on no survey image (outside every image's pixels)",
    MISSING_INPUT: "a catalog column the model also takes (an intrinsic property) is null, NaN, inf or a "
                   "missing-value code",
}

#: Statuses whose rows carry new probabilities.
PREDICTED = (OK, NAN_FILLED, PARTIAL_EDGE)
