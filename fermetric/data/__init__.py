"""Data layer: FER2013 (CSV and image folders), FER+, generic face folders and SynthFER, held in
memory as uint8 tensors and served by a seeded batch loader with batched augmentation."""
from fermetric.data.classes import FER2013_CLASSES, FERPLUS_CLASSES, IMAGE_SIZE
from fermetric.data.dataset import DataSplits, FERDataset, stratified_split
from fermetric.data.loaders import BatchLoader
from fermetric.data.sources import load_data
from fermetric.data.transforms import BatchAugment

__all__ = [
    "FER2013_CLASSES",
    "FERPLUS_CLASSES",
    "IMAGE_SIZE",
    "DataSplits",
    "FERDataset",
    "stratified_split",
    "BatchLoader",
    "BatchAugment",
    "load_data",
]
