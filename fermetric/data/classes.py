"""Class ids and names of the label sets fermetric knows."""
from __future__ import annotations

# FER2013 ids, in the order of the `emotion` column.
FER2013_CLASSES: tuple[str, ...] = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")

# Kaggle image-folder layout: lower-case folder name -> FER2013 class id.
FER2013_FOLDER_NAMES: dict[str, int] = {name.lower(): i for i, name in enumerate(FER2013_CLASSES)}

# FER2013 Training class counts (28,709 rows): the proportions SynthFER copies.
FER2013_TRAIN_COUNTS: tuple[int, ...] = (3995, 436, 4097, 7215, 4830, 3171, 4965)

# FER+ 8-class protocol, in the column order of fer2013new.csv.
FERPLUS_CLASSES: tuple[str, ...] = (
    "Neutral", "Happiness", "Surprise", "Sadness", "Anger", "Disgust", "Fear", "Contempt",
)
FERPLUS_VOTE_COLUMNS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF",
)

IMAGE_SIZE = 48
