"""Image folders: read_face_image on every mode, the Kaggle and generic layouts, class maps,
masks, errors, and the real folder sample."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from fermetric.config import DataConfig
from fermetric.data import load_data
from fermetric.data.classes import FER2013_CLASSES
from fermetric.data.folders import load_folder
from fermetric.data.images import read_face_image
from fermetric.errors import DataError

FER_FOLDERS = [c.lower() for c in FER2013_CLASSES]


def gray(value: int, size=(48, 48)) -> Image.Image:
    return Image.new("L", size, value)


def make_tree(root, layout: dict[str, int], prefix: str = "img", value=None, ext=".png") -> dict[str, int]:
    """layout: "split/class" (or "class") -> number of images; pixel value encodes the class."""
    for rel, n in layout.items():
        folder = root / rel
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = prefix(rel, i) if callable(prefix) else f"{prefix}_{i:03d}"
            gray(value if value is not None else 10 * (len(rel) % 20) + i).save(folder / f"{name}{ext}")
    return layout


# ---------------------------------------------------------------------------------------------
# read_face_image


def test_read_face_image_modes(tmp_path):
    base = np.tile(np.arange(48, dtype=np.uint8) * 5, (48, 1))
    cases = {}
    Image.fromarray(base).save(tmp_path / "l.png")
    cases["l.png"] = base
    Image.fromarray(base).save(tmp_path / "l.pgm")
    cases["l.pgm"] = base
    Image.fromarray(base).save(tmp_path / "l.bmp")
    cases["l.bmp"] = base
    Image.fromarray(base).save(tmp_path / "l.tif")
    cases["l.tif"] = base
    Image.fromarray(base).save(tmp_path / "l.webp", lossless=True)
    cases["l.webp"] = base
    Image.fromarray(base.astype(np.uint16) * 257).save(tmp_path / "i16.png")  # 16-bit: rescaled, not clipped
    cases["i16.png"] = base
    Image.fromarray(base.astype(np.float32) / 255.0).save(tmp_path / "f.tif")  # float in [0, 1]
    cases["f.tif"] = base
    rgb = np.stack([base] * 3, axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    cases["rgb.png"] = base
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.gif")
    cases["p.gif"] = base  # 48 grey levels: the adaptive palette holds them exactly
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.tif")
    cases["cmyk.tif"] = None
    for name, expect in cases.items():
        out = read_face_image(tmp_path / name)
        assert out.shape == (48, 48) and out.dtype == np.uint8, name
        if expect is not None:
            np.testing.assert_array_equal(out, expect, err_msg=name)
        else:
            assert np.abs(out.astype(int) - base).max() <= 12, name


def test_alpha_is_composited_on_white_and_binary_images(tmp_path):
    rgba = np.zeros((48, 48, 4), dtype=np.uint8)  # black but fully transparent...
    rgba[:, 24:] = (0, 0, 0, 255)  # ...except the right half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_face_image(tmp_path / "a.png")
    assert (out[:, :24] == 255).all() and (out[:, 24:] == 0).all()
    Image.fromarray(rgba[..., [0, 3]], "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_face_image(tmp_path / "la.png"), out)
    Image.fromarray(rgba[..., 3] > 0).save(tmp_path / "b.bmp")  # mode "1"
    assert set(np.unique(read_face_image(tmp_path / "b.bmp"))) == {0, 255}


def test_centre_crop_and_resize(tmp_path):
    wide = np.zeros((100, 200), dtype=np.uint8)
    wide[:, 50:150] = 200  # the centre square is uniform; the sides must be cropped away
    Image.fromarray(wide).save(tmp_path / "wide.png")
    np.testing.assert_array_equal(read_face_image(tmp_path / "wide.png"), np.full((48, 48), 200, np.uint8))
    tall = np.zeros((60, 30), dtype=np.uint8)
    tall[15:45] = 90
    Image.fromarray(np.stack([tall] * 3, -1)).save(tmp_path / "tall.jpg", quality=100)
    out = read_face_image(tmp_path / "tall.jpg")
    assert out.shape == (48, 48) and np.abs(out.astype(int) - 90).max() <= 3
    # Big JPEGs are decoded at a reduced scale: same picture.
    big = np.zeros((960, 960), dtype=np.uint8)
    big[:480] = 255
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=95)
    out = read_face_image(tmp_path / "big.jpg")
    assert out[:20].min() >= 245 and out[28:].max() <= 10
    # Antialiasing: a 1-pixel checkerboard shrinks to mid-grey, not to aliased stripes.
    checker = ((np.indices((480, 480)).sum(0) % 2) * 255).astype(np.uint8)
    Image.fromarray(checker).save(tmp_path / "checker.png")
    assert np.abs(read_face_image(tmp_path / "checker.png").astype(int) - 128).max() <= 3


def test_exif_orientation_is_applied(tmp_path):
    img = np.zeros((48, 96), dtype=np.uint8)
    img[:, :48] = 255  # stored: left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: the white half goes to the top
    Image.fromarray(img).save(tmp_path / "rot.jpg", exif=exif, quality=100)
    out = read_face_image(tmp_path / "rot.jpg").astype(int)
    assert out[:20].mean() > 240 and out[28:].mean() < 15


def test_unreadable_images_name_the_file(tmp_path):
    (tmp_path / "text.jpg").write_text("hello, not a jpeg")
    with pytest.raises(DataError, match=r"text.jpg: not an image"):
        read_face_image(tmp_path / "text.jpg")
    gray(100, (64, 64)).save(tmp_path / "ok.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:70])
    with pytest.raises(DataError, match=r"cut.png: corrupt or unreadable image"):
        read_face_image(tmp_path / "cut.png")
    with pytest.raises(DataError, match=r"absent.png: no such file"):
        read_face_image(tmp_path / "absent.png")


# ---------------------------------------------------------------------------------------------
# layouts


def test_kaggle_layout_splits_public_and_private_tests(tmp_path):
    make_tree(tmp_path, {f"train/{c}": 3 for c in FER_FOLDERS}, prefix="Training")
    for c in ("happy", "sad"):
        make_tree(tmp_path, {f"test/{c}": 2}, prefix=lambda rel, i: "PublicTest_%d" % i)
        make_tree(tmp_path, {f"test/{c}": 1}, prefix=lambda rel, i: "PrivateTest_%d" % i)
    s = load_folder(tmp_path)
    assert s.class_names == FER2013_CLASSES and list(s.splits) == ["train", "val", "test"]
    assert s["train"].class_counts() == [3] * 7
    assert s["val"].class_counts() == [0, 0, 0, 4, 4, 0, 0][:3] + [2, 2, 0, 0] and len(s["val"]) == 4
    assert s["test"].class_counts() == [0, 0, 0, 1, 1, 0, 0]
    assert all(src.startswith("test/") and "PublicTest_" in src for src in s["val"].sources)
    assert s.info["val_from"].startswith("PublicTest_")
    # Labels follow FER2013 ids: "happy" is 3.
    assert s["test"].sources[0].startswith("test/happy/") and int(s["test"].labels[0]) == 3


def test_val_is_carved_from_train_seeded_and_stratified(tmp_path):
    make_tree(tmp_path, {"train/happy": 20, "train/sad": 10, "test/happy": 2, "test/sad": 2})
    a = load_folder(tmp_path, val_fraction=0.2, seed=1)
    b = load_folder(tmp_path, val_fraction=0.2, seed=1)
    c = load_folder(tmp_path, val_fraction=0.2, seed=2)
    assert list(a.splits) == ["train", "val", "test"]
    assert a["val"].class_counts() == [0, 0, 0, 4, 2, 0, 0] and a["train"].class_counts() == [0, 0, 0, 16, 8, 0, 0]
    assert a["val"].sources == b["val"].sources and a["val"].sources != c["val"].sources
    assert not set(a["val"].sources) & set(a["train"].sources)
    assert a["test"].class_counts() == [0, 0, 0, 2, 2, 0, 0] and "seed 1" in a.info["val_from"]
    assert "val" not in load_folder(tmp_path, val_fraction=0.0)


def test_val_folder_is_used(tmp_path):
    make_tree(tmp_path, {"train/angry": 4, "val/angry": 2, "Test/angry": 1})
    s = load_folder(tmp_path)
    assert [len(s[k]) for k in ("train", "val", "test")] == [4, 2, 1] and s.info["val_from"] == "val folder"


def test_generic_folder_sorted_names_and_class_map(tmp_path):
    caps_root = tmp_path / "caps"
    tmp_path = tmp_path / "ck"
    make_tree(tmp_path, {"anger": 3, "contempt": 2, "happy": 4})
    s = load_folder(tmp_path, val_fraction=0.25)
    assert s.class_names == ("anger", "contempt", "happy")  # not all FER2013 names: sorted
    assert s.info["layout"] == "class folders"
    assert len(s["train"]) + len(s["val"]) == 9 and s["val"].class_counts() == [1, 1, 1]
    m = load_folder(tmp_path, class_map={"anger": "Angry", "Happy": "happy", "contempt": None}, val_fraction=0)
    assert m.class_names == FER2013_CLASSES and m["train"].class_counts() == [3, 0, 0, 4, 0, 0, 0]
    with pytest.raises(DataError, match=r"class folders not in class_map: contempt.*null to skip"):
        load_folder(tmp_path, class_map={"anger": "Angry", "happy": "Happy"})
    with pytest.raises(DataError, match=r"class_map names folders that do not exist: fear"):
        load_folder(tmp_path, class_map={"anger": "a", "happy": "b", "contempt": "c", "fear": "d"})
    # Case-insensitive FER2013 names keep FER2013 ids.
    make_tree(caps_root, {"Happy": 1, "SAD": 1})
    caps = load_folder(caps_root, val_fraction=0)
    assert caps.class_names == FER2013_CLASSES and caps["train"].labels.tolist() == [3, 4]
    # And through load_data with a DataConfig.
    d = load_data(tmp_path, DataConfig(class_map={"anger": "x", "happy": "y", "contempt": None}, val_fraction=0.5), seed=0)
    assert d.class_names == ("x", "y") and len(d["train"]) + len(d["val"]) == 7


def test_masks_mirror_the_layout(tmp_path):
    make_tree(tmp_path, {"train/happy": 2, "test/happy": 1}, ext=".jpg")
    for rel in ("train/happy/img_000", "train/happy/img_001", "test/happy/img_000"):
        (tmp_path / "masks" / rel).parent.mkdir(parents=True, exist_ok=True)
        m = np.zeros((48, 48), dtype=np.uint8)
        m[10:20, 5:15] = 255
        Image.fromarray(m).save(tmp_path / "masks" / f"{rel}.png")
    s = load_folder(tmp_path, val_fraction=0.5)
    for split in s.splits:
        ds = s[split]
        assert ds.masks is not None and ds.masks.dtype == torch.bool
        assert ds.masks[:, 10:20, 5:15].all() and ds.masks.sum() == 100 * len(ds)
    (tmp_path / "masks/train/happy/img_001.png").unlink()
    with pytest.raises(DataError, match=r"img_001.jpg: no mask .*masks/train/happy/img_001.png"):
        load_folder(tmp_path)


def test_synthfer_folder_round_trip(tmp_path):
    from fermetric.data.synthetic import load_synthfer, write_synthfer_folder

    write_synthfer_folder(tmp_path, n=60, seed=3)
    s = load_folder(tmp_path)
    ref = load_synthfer(48, 6, 6, seed=3)
    assert list(s.splits) == list(ref.splits)
    for split in ref.splits:
        a, b = ref[split], s[split]
        order = sorted(range(len(b)), key=lambda i: int(b.sources[i].split("_")[-1].split(".")[0]))
        b = b.subset(order)
        assert a.images.equal(b.images) and a.labels.equal(b.labels) and a.masks.equal(b.masks)


# ---------------------------------------------------------------------------------------------
# errors


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_folder(tmp_path / "absent")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        load_folder(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no class folders"):
        load_folder(tmp_path / "empty")
    (tmp_path / "flat/train").mkdir(parents=True)
    gray(1).save(tmp_path / "flat/train/a.png")
    with pytest.raises(DataError, match="train: no class folders"):
        load_folder(tmp_path / "flat")
    make_tree(tmp_path / "e", {"train/happy": 2})
    (tmp_path / "e/train/sad").mkdir()
    with pytest.raises(DataError, match=r"e/train/sad: empty class folder"):
        load_folder(tmp_path / "e")


def test_empty_class_folder_is_only_a_warning_when_another_split_has_the_class(tmp_path, caplog):
    make_tree(tmp_path, {"train/happy": 2, "train/sad": 2, "test/happy": 1})
    (tmp_path / "test/sad").mkdir()
    with caplog.at_level(logging.WARNING):
        s = load_folder(tmp_path, val_fraction=0)
    assert "test/sad: empty class folder" in caplog.text and len(s["test"]) == 1


def test_bad_image_files_fail_naming_the_file(tmp_path):
    make_tree(tmp_path, {"train/happy": 2})
    (tmp_path / "train/happy/fake.jpg").write_text("not an image")
    with pytest.raises(DataError, match=r"train/happy/fake.jpg: not an image"):
        load_folder(tmp_path)
    (tmp_path / "train/happy/fake.jpg").unlink()
    good = (tmp_path / "train/happy/img_000.png").read_bytes()
    (tmp_path / "train/happy/broken.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"broken.png: corrupt or unreadable image"):
        load_folder(tmp_path)


def test_other_files_are_ignored_and_counted(tmp_path, caplog):
    make_tree(tmp_path, {"train/happy": 2})
    (tmp_path / "train/happy/notes.txt").write_text("x")
    (tmp_path / "train/happy/.DS_Store").write_text("x")
    with caplog.at_level(logging.WARNING):
        s = load_folder(tmp_path, val_fraction=0)
    assert len(s["train"]) == 2 and s.info["ignored"]["count"] == 1
    assert "notes.txt" in caplog.text


def test_thread_pool_gives_the_same_result(tmp_path):
    make_tree(tmp_path, {"train/happy": 40, "train/sad": 40})
    a = load_folder(tmp_path, workers=1, val_fraction=0)
    b = load_folder(tmp_path, workers=4, val_fraction=0)
    assert a["train"].images.equal(b["train"].images) and a["train"].sources == b["train"].sources


# ---------------------------------------------------------------------------------------------
# the real folder sample (../shared/data)


def test_real_folder_sample(folder_sample):
    s = load_folder(folder_sample)
    # test/ holds only PublicTest_* files: they are FER2013's val split, as in fer2013.csv.
    assert list(s.splits) == ["train", "val"]
    assert s.class_names == FER2013_CLASSES
    assert s["train"].class_counts() == [12] * 7 and s["val"].class_counts() == [6] * 7
    assert s["train"].images.shape == (84, 1, 48, 48) and s["train"].images.dtype == torch.uint8
    for ds in s.splits.values():
        for src, label in zip(ds.sources, ds.labels.tolist()):
            assert src.split("/")[1] == FER2013_CLASSES[label].lower()
    assert 20 < s["train"].images.float().mean() < 235  # real pictures, not blank


def test_two_folders_for_one_split_is_an_error(tmp_path):
    make_tree(tmp_path, {"train/happy": 1, "val/happy": 1, "validation/happy": 1})
    with pytest.raises(DataError, match=r"both val/ and validation/ would be the val split"):
        load_folder(tmp_path)


def test_special_files_are_skipped_never_opened(tmp_path, caplog):
    import os

    for cls in ("happy", "sad"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            gray(40 * i).save(tmp_path / cls / f"{i}.png")
    os.mkfifo(tmp_path / "sad" / "pipe.jpg")  # opening it would block for ever
    s = load_folder(tmp_path, val_fraction=0)
    assert len(s["train"]) == 4
    assert "pipe.jpg (not a regular file)" in caplog.text


def test_class_folders_of_one_name_are_one_class_across_splits(tmp_path, caplog):
    for split, name in (("train", "Very_Happy"), ("train", "calm"), ("test", "very happy"), ("test", "Calm ")):
        (tmp_path / split / name).mkdir(parents=True)
        gray(90).save(tmp_path / split / name / "a.png")
    s = load_folder(tmp_path, val_fraction=0)
    assert s.class_names == ("Very_Happy", "calm")
    assert s["test"].labels.tolist() == [0, 1]
    assert "'very happy' taken as class 'Very_Happy'" in caplog.text
