"""`fermetric predict [RUN] IMAGE [IMAGE ...]`: expressions of the faces in photos, with a trained
run or a pretrained model of the zoo (the default classifier when no RUN is given)."""
from __future__ import annotations

from typing import Optional

import click

from fermetric.cli.options import OutPath, device_option

EXIT_HELP = """RUN is a run directory or a pretrained model's name (fermetric models --pretrained); without
it (the first argument is an image) or with --model NAME, the pretrained model is used.

Images larger than 64 px on a side are searched for faces (--detector: MediaPipe's BlazeFace,
or OpenCV's Haar cascade where BlazeFace cannot load or when asked); each face is cropped to a square (1 + margin) times its box, made grayscale and resized to 48x48.
Images of at most 64x64 px are taken as face crops and used whole (--no-detect does this for
every image). Directories are expanded to the images in them (recursively).

Writes OUT/predictions.json (per image: mode, faces with box, crop box, label, probability of
every class; plus the inputs that failed and why) and OUT/<name>_pred.png per image.

\b
Exit codes:
  0  at least one image gave a prediction (failed inputs are listed on stderr and in the JSON)
  1  no image gave a prediction (every input missing, unreadable, empty or without a face)
  2  bad arguments or RUN is not a usable run directory"""


def register(main: click.Group) -> None:
    @main.command("predict", help="Predict the expression of every face in photos with a trained run or a "
                  "pretrained model.\n\n" + EXIT_HELP)
    @click.argument("args", nargs=-1, required=True, metavar="[RUN] IMAGE...", type=click.Path())
    @click.option("--model", "model_name", default=None, metavar="NAME",
                  help="A pretrained model of the zoo (default when no RUN is given: the default classifier).")
    @click.option("--out", type=OutPath(file_okay=False), default="predictions", show_default=True,
                  help="Output folder for predictions.json and the annotated images.")
    @click.option("--saliency", is_flag=True, help="Overlay Grad-CAM of the predicted class on each face.")
    @click.option("--min-face", type=click.IntRange(min=8), default=40, show_default=True,
                  help="Smallest face side searched, in pixels.")
    @click.option("--detector", type=click.Choice(["auto", "blazeface", "haar"]), default="auto", show_default=True,
                  help="Face detector: BlazeFace (MediaPipe's, over a tile pyramid; found 96 % of 400 faces where Haar "
                       "found 79 %, 0.11 s per 640x480 photo) or OpenCV's Haar cascade (4x faster); auto: BlazeFace, "
                       "Haar where BlazeFace cannot load.")
    @click.option("--margin", type=click.FloatRange(min=0.0, max=2.0), default=None,
                  help="Crop side = (1 + margin) x the face box's longer side (default 0: FER2013's faces are "
                       "cropped tightly; fermetric.inference.faces.DEFAULT_MARGIN).")
    @click.option("--tta", type=click.Choice(["none", "shift", "tencrop"]), default="shift", show_default=True,
                  help="Average each face's scores over shifted crops x flip (shift, 10 views) or ten-crop; none: "
                       "one pass (the zoo's cards report both).")
    @click.option("--no-detect", is_flag=True, help="Use every image whole as a face crop (no detection).")
    @click.option("--detect-small", is_flag=True, help="Search for faces even in images of at most 64 px.")
    @click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
                  help="Video: analyse one frame in N.")
    @click.option("--smooth", type=click.FloatRange(min=0.0), default=0.0, show_default=True, metavar="SECONDS",
                  help="Video: a centred moving average of each face's probabilities over this many seconds, in the "
                       "timeline and as label_smoothed in the CSV (0: none).")
    @click.option("--annotate", is_flag=True, help="Video: also write OUT/<name>_annotated.mp4 with boxes and labels.")
    @device_option
    @click.pass_context
    def predict(ctx: click.Context, args: tuple[str, ...], model_name: Optional[str], out: str, saliency: bool,
                min_face: int, detector: str, margin: Optional[float], tta: str, no_detect: bool, detect_small: bool,
                every: int, smooth: float, annotate: bool, device: Optional[str]) -> None:
        from tqdm.auto import tqdm

        from fermetric.api import predict as run_predict
        from fermetric.inference.predictor import split_run_and_images

        try:
            run, images = split_run_and_images(args, model_name)
        except ValueError as e:
            raise click.UsageError(str(e)) from None

        from fermetric.inference.video import is_video

        if any(is_video(a) for a in images):
            if len(images) != 1:
                raise click.UsageError("give one video at a time, without images beside it")
            if no_detect or saliency:
                raise click.UsageError("--no-detect and --saliency are for photos; a video's faces are always detected")
            _predict_video(ctx, run, images[0], out, every, smooth, annotate, min_face, detector, margin, tta, device)
            return
        if every != 1 or smooth or annotate:
            raise click.UsageError("--every, --smooth and --annotate are for a video (mp4, avi, mov, mkv, webm)")
        if no_detect and detect_small:
            raise click.UsageError("--no-detect and --detect-small contradict each other")
        detect = "never" if no_detect else ("always" if detect_small else "auto")
        quiet = bool((ctx.obj or {}).get("quiet"))

        def progress(files):
            return tqdm(files, desc="predict", unit="image", disable=quiet or len(files) < 2, leave=False)

        batch = run_predict(run, images, out, detect=detect, min_face=min_face, margin=margin, saliency=saliency,
                            tta=None if tta == "none" else tta, device=device, progress=progress, detector=detector)
        for r in batch.images:
            faces = ", ".join(
                f"{f.label} {f.probabilities[f.label_id] * 100:.1f} %" + (f" at {list(f.box)}" if r.mode == "detected" else "")
                for f in r.faces
            )
            click.echo(f"{r.path}: {len(r.faces)} face(s) ({r.mode}): {faces}")
        for p, msg in batch.errors:
            click.echo(f"skipped {p}: {msg}", err=True)
        for note in batch.notes:
            click.echo(f"note: {note}", err=True)
        click.echo(f"{len(batch.images)} image(s) predicted, {batch.n_faces} face(s), {len(batch.errors)} input(s) failed "
                   f"(model: {run}, {batch.kind}, {len(batch.class_names)} classes)")
        if not batch.images:
            click.echo(f"error: no prediction for any of the {len(batch.errors)} input(s); nothing written", err=True)
            ctx.exit(1)
        click.echo(f"  {out}/predictions.json")
        for r in batch.images:
            click.echo(f"  {r.annotated}")


def _predict_video(ctx: click.Context, run: str, video: str, out: str, every: int, smooth: float, annotate: bool,
                   min_face: int, detector: str, margin: Optional[float], tta: str, device: Optional[str]) -> None:
    from tqdm.auto import tqdm

    from fermetric.api.predict import predict_video

    quiet = bool((ctx.obj or {}).get("quiet"))
    # a bar on a terminal only (disable=None: tqdm's own check), not one line per frame in a log
    with tqdm(desc="video", unit="frame", disable=True if quiet else None, leave=False) as bar:
        res = predict_video(run, video, out, every=every, smooth=smooth, annotate=annotate, min_face=min_face,
                            margin=margin, tta=None if tta == "none" else tta, device=device,
                            progress=lambda n: bar.update(n - bar.n), detector=detector)
    summary = res.to_json()
    click.echo(f"{video}: {res.frames} frames at {res.fps:g} fps, {res.analysed} analysed, faces in "
               f"{summary['frames_with_faces']}; {len(res.faces)} face(s) followed "
               f"({summary['analysed_frames_per_second']} frames/s)")
    for face, info in summary["faces"].items():
        click.echo(f"  face {face}: {info['frames']} frames, {info['first_s']:.1f}-{info['last_s']:.1f} s, "
                   f"mostly {info['most_frequent']}")
    for p in res.files:
        click.echo(f"  {p}")
