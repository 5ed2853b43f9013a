"""`predict` and the pretrained demo: a run or zoo model on the user's photos."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from fermetric.errors import ConfigError
from fermetric.api.common import PathLike
from fermetric.api.explain import explain_images


def predict(run: PathLike, images: Iterable[PathLike], out: Optional[PathLike] = "predictions", *,
            detect: str = "auto", min_face: int = 40, margin: Optional[float] = None, saliency: bool = False,
            tta: bool | str | None = "default", device: Optional[str] = "auto", progress=None, detector: str = "auto"):
    """`fermetric predict`: the expression of every face in photos (files or folders), with
    OUT/predictions.json and an annotated image per photo (out=None: write nothing).

    Returns:
        A fermetric.inference.BatchResult (failed inputs are in its `errors`, not raised).
        tta "default" is fermetric.inference.predictor.DEFAULT_TTA; None: one pass per face.
        detector: "auto" (BlazeFace; Haar where it cannot load), "blazeface" or "haar".
    """
    from fermetric.inference import FacePredictor, predict_images
    from fermetric.inference.faces import DEFAULT_MARGIN
    from fermetric.inference.predictor import DEFAULT_TTA

    predictor = FacePredictor.from_run_dir(run, device=device, tta=DEFAULT_TTA if tta == "default" else tta)
    margin = DEFAULT_MARGIN if margin is None else margin
    return predict_images(predictor, images, out, detect=detect, min_face=min_face, margin=margin,
                          saliency=saliency, progress=progress, detector=detector)


DEMO_METHODS = ("saliency", "occlusion", "gradcam", "lime")  # the rows `fermetric demo` draws for each run


def demo_pretrained(model: Optional[str] = None, images: Sequence[PathLike] = (), out: PathLike = "fermetric-demo-pretrained",
                    *, synth_per_class: int = 1, bundled: bool = True, methods: Sequence[str] = DEMO_METHODS,
                    detect: str = "auto", min_face: int = 40, margin: Optional[float] = None, seed: int = 0,
                    lime_samples: int = 1000, device: Optional[str] = "auto", precision: Optional[str] = "auto",
                    progress: bool = False) -> dict[str, Any]:
    """`fermetric demo --pretrained`: the explanation half of the demo on a pretrained model of the
    zoo, with no training and no data set: predict and explain the bundled real faces
    (fermetric.data.bundled), `synth_per_class` SynthFER faces of each class (their evidence masks
    outlined) and the faces found in `images` (the user's photos, detected as `predict` does),
    then write the HTML report.

    Writes into `out` (which must not exist or be empty): predict/ (predictions.json and the
    annotated photos: the bundled photo and the user's), explain/ (<method>_<group>.png / .npy and
    explain_<group>.json for the groups bundled, synthfer, photos), demo.json and report.html.

    Args:
        model: a zoo entry's name (default: the default classifier, fermetric.zoo.DEFAULT_CLASSIFIER).
        images: photos or folders of photos; inputs without a face are listed in the result's
            "predict_errors", not raised.
        methods: explanation methods (fermetric.analysis.METHODS), default the demo's four.
        lime_samples: perturbed images LIME scores per face (explain's default 1000).
        detect, min_face, margin: face detection as in `predict`.

    Returns:
        The demo.json record (model, card numbers, per group: faces, known and predicted
        classes, methods done and skipped) plus "paths": every figure and the report.

    Raises:
        ZooError: the model (or the default one) is not installed.
        ConfigError: `out` already holds files, no face to explain, or an unknown method.
    """
    from fermetric.scoring.run import run_scorer

    import torch

    from fermetric.analysis import METHODS
    from fermetric.data.bundled import bundled_faces
    from fermetric.data.classes import FER2013_CLASSES
    from fermetric.data.synthetic import generate_synthfer
    from fermetric.evaluation.crossdata import map_classes
    from fermetric.inference import FacePredictor, predict_images
    from fermetric.inference.faces import DEFAULT_MARGIN
    from fermetric.inference.predictor import DEFAULT_TTA
    from fermetric.report import build_report
    from fermetric.report.html import pretrained_demo_section
    from fermetric.utils.checks import check_int
    from fermetric.utils.io import write_json
    from fermetric.zoo import DEFAULT_CLASSIFIER, ZooError, get_entry, is_pretrained_name, load_pretrained

    synth_per_class = check_int("synth_per_class", synth_per_class, 0, error=ConfigError)
    lime_samples = check_int("lime_samples", lime_samples, 10, error=ConfigError)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ConfigError(f"methods: unknown or none ({', '.join(bad) or 'empty'}); valid: {', '.join(METHODS)}")
    name = model or DEFAULT_CLASSIFIER
    if model is None and not is_pretrained_name(name):
        raise ZooError(f"the default pretrained model {name!r} is not installed (fermetric models --pretrained lists "
                       "what is); give one with --model NAME, or run fermetric demo without --pretrained to train "
                       "the demo's models on SynthFER")
    entry = get_entry(name)  # an unknown --model: the known names, before anything is written
    out_dir = Path(out)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"--out {out_dir} already exists and is not empty; remove it or choose another --out")
    if not bundled and synth_per_class == 0 and not images:
        raise ConfigError("nothing to explain: no bundled face, no SynthFER face and no image given")
    created = not out_dir.exists()
    try:
        t0 = time.time()
        r = load_pretrained(name, device=device or "auto", precision=precision or "auto")
        sc = run_scorer(r, "auto")
        # bundled and SynthFER labels are FER2013 ids: matched to the model's classes by name and emotion
        fer_to_model = map_classes(FER2013_CLASSES, r.class_names).index
        faces = bundled_faces() if bundled else []
        predictor = FacePredictor(r, tta=DEFAULT_TTA)  # the predictions `fermetric predict` gives
        batch = predict_images(predictor, [f.photo for f in faces] + [Path(p) for p in images], out_dir / "predict",
                               detect=detect, min_face=min_face, margin=DEFAULT_MARGIN if margin is None else margin)
        bundled_photos = {f.photo for f in faces}
        groups: dict[str, tuple[torch.Tensor, np.ndarray, list[str], Optional[np.ndarray]]] = {}
        if faces:
            groups["bundled"] = (torch.tensor(np.stack([f.image() for f in faces]))[:, None],
                                 fer_to_model[[f.label_id for f in faces]], [f.name for f in faces], None)
        if synth_per_class:
            fer_ids = np.flatnonzero(fer_to_model >= 0)  # SynthFER draws FER2013 classes; only those the model knows
            ds = generate_synthfer(len(fer_ids) * synth_per_class, seed=seed, labels=np.repeat(fer_ids, synth_per_class))
            groups["synthfer"] = (ds.images, fer_to_model[ds.labels.numpy()],
                                  [f"SynthFER {i}" for i in range(len(ds))], ds.masks.numpy())
        user = [(res, i, f) for res in batch.images if res.path not in bundled_photos for i, f in enumerate(res.faces)]
        if user:
            groups["photos"] = (torch.tensor(np.stack([f.crop for _, _, f in user]))[:, None],
                                np.full(len(user), -1), [f"{res.path.name} face {i + 1}" for res, i, _ in user], None)
        if not groups:
            raise ConfigError("no face to explain: none of the images gave a face ("
                              + "; ".join(f"{p}: {msg}" for p, msg in batch.errors) + ")")
        record: dict[str, Any] = {
            "model": name, "kind": r.kind, "architecture": r.cfg.model.name, "class_names": list(r.class_names),
            "card": {k: entry.card.get(k) for k in ("data", "split", "test", "sha256")}, "scorer": type(sc).__name__,
            "methods": list(methods), "seed": seed, "groups": {},
            "predict_errors": [{"path": str(p), "error": msg} for p, msg in batch.errors],
        }
        written: list[Path] = []
        for group, (uint8_images, labels, names, evidence) in groups.items():
            # the probabilities `predict` gives (softmax, or an embedding model's kNN votes); the maps
            # explain that predicted class
            proba = predictor.predict_proba(uint8_images.numpy())
            preds = proba.argmax(1)
            x = uint8_images.float().div_(255.0)
            rows = [f"{n}\ntrue: {r.class_names[y] if y >= 0 else '?'} · pred: {r.class_names[p]} {proba[i, p]:.0%}"
                    for i, (n, y, p) in enumerate(zip(names, labels, preds))]
            paths, done, skipped = explain_images(
                sc, x, list(methods), out_dir / "explain", group, class_names=r.class_names, labels=None, predictions=preds,
                target=preds, evidence=evidence, seed=seed, row_titles=rows, lime_samples=lime_samples, progress=progress,
                title=f"{name} ({r.kind}, {r.cfg.model.name}) · {group}")
            written += paths
            record["groups"][group] = {
                "faces": [{"name": n, "label": r.class_names[y] if y >= 0 else None, "prediction": r.class_names[p],
                           "probability": float(proba[i, p])} for i, (n, y, p) in enumerate(zip(names, labels, preds))],
                "methods": done, "skipped": skipped}
            write_json(out_dir / "explain" / f"explain_{group}.json", {"model": name, "group": group, **record["groups"][group]})
        record["seconds"] = round(time.time() - t0, 1)
        write_json(out_dir / "demo.json", record)
        report = build_report([], out_dir / "report.html", title=f"fermetric demo: pretrained model {name}",
                              extra_dirs=[out_dir], preface_html=pretrained_demo_section(record))
        return {**record, "paths": [*written, *(res.annotated for res in batch.images if res.annotated), report]}
    except BaseException:
        # bad input (no face in the photos) or a failure part-way: no half-written demo is left
        shutil.rmtree(out_dir, ignore_errors=True)
        if not created:  # it was an empty folder: leave it so
            out_dir.mkdir(parents=True, exist_ok=True)
        raise


def predict_video(run: PathLike, video: PathLike, out: PathLike = "predictions", *, every: int = 1, smooth: float = 0.0,
                  annotate: bool = False, min_face: int = 40, margin: Optional[float] = None,
                  tta: bool | str | None = "default", device: Optional[str] = "auto", progress=None,
                  detector: str = "auto"):
    """`fermetric predict video.mp4`: the expression of every face in every `every`-th frame, faces
    followed by position (fermetric.inference.video): OUT/<stem>_frames.csv, _timeline.png,
    _video.json and, with `annotate`, _annotated.mp4. All or nothing: a file that is not a video,
    has no frames or shows no face raises a DataError and writes nothing.

    Returns:
        A fermetric.inference.video.VideoResult (its `files` where they were written).
    """
    from fermetric.inference import FacePredictor
    from fermetric.inference.faces import DEFAULT_MARGIN
    from fermetric.inference.predictor import DEFAULT_TTA, PREDICTIONS_LEGACY
    from fermetric.inference.video import predict_video as run_video
    from fermetric.utils.outputs import final_path, output_dir, staged_outputs

    legacy = (*PREDICTIONS_LEGACY, "*_video.json")  # a video's outputs mark the folder as ours too
    output_dir(out, "predictions", legacy=legacy, create=False)  # refused before any work
    predictor = FacePredictor.from_run_dir(run, device=device, tta=DEFAULT_TTA if tta == "default" else tta)
    with staged_outputs(out) as tmp:
        result = run_video(predictor, video, tmp, every=every, min_face=min_face,
                           margin=DEFAULT_MARGIN if margin is None else margin, smooth=smooth, annotate=annotate,
                           progress=progress, detector=detector)
        result.files = [final_path(p, tmp, out) for p in result.files]
    output_dir(out, "predictions", legacy=legacy)  # marks the folder as ours
    return result
