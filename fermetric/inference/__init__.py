"""Inference on photos: face detection (BlazeFace, the Haar cascade as the fallback), 48x48 crops,
class probabilities from a trained run (classifier softmax or kNN votes of an embedding model),
annotated images."""
from fermetric.inference.faces import (
    CROP_MAX_SIDE,
    Photo,
    crop_face,
    detect_faces,
    expand_inputs,
    is_face_crop,
    read_photo,
    whole_image_crop,
)
from fermetric.inference.predictor import BatchResult, FacePredictor, FaceResult, ImageResult, annotate, predict_images

__all__ = [
    "CROP_MAX_SIDE", "Photo", "read_photo", "detect_faces", "crop_face", "whole_image_crop", "expand_inputs",
    "is_face_crop", "FacePredictor", "FaceResult", "ImageResult", "BatchResult", "predict_images", "annotate",
]
