"""Class ids and names of the label sets fermetric knows."""
from __future__ import annotations

import re

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


def class_key(name: str) -> str:
    """What identifies a class name: no case, no surrounding spaces, and runs of spaces, '-' and
    '_' read as one separator ("Very_Happy", "very happy", "very-happy " are one class)."""
    return re.sub(r"[\s_\-]+", " ", str(name).strip().lower()).strip()


# Spellings of the same emotion across data sets (FER2013 "Angry", FER+ "anger", CK+ "anger",
# "sadness", "happy", JAFFE "SAD", RAF-DB "Surprised", ...) -> one canonical name.
EMOTION_SYNONYMS: dict[str, str] = {
    **{k: "angry" for k in ("angry", "anger", "mad")},
    **{k: "disgust" for k in ("disgust", "disgusted", "disgusting")},
    **{k: "fear" for k in ("fear", "fearful", "afraid", "scared")},
    **{k: "happy" for k in ("happy", "happiness", "joy", "joyful", "smile")},
    **{k: "sad" for k in ("sad", "sadness", "sorrow")},
    **{k: "surprise" for k in ("surprise", "surprised")},
    **{k: "neutral" for k in ("neutral", "neutrality", "calm")},
    **{k: "contempt" for k in ("contempt", "contemptuous")},
}


def canonical_emotion(name: str) -> str:
    """The emotion a class name means ("Anger", "angry", "ANGRY" -> "angry"); names that are not
    a known emotion come back as their `class_key`."""
    key = class_key(name)
    return EMOTION_SYNONYMS.get(key, key)
