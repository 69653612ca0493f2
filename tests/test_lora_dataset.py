"""load_image_dataset: the three folder layouts, odd image modes and bad files."""

import json

import numpy as np
import pytest
from PIL import Image

from animegen_utils.lora import load_image_dataset


def _two_tone(size=(80, 40)):
    """Left half red, right half blue."""
    im = Image.new("RGB", size, (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    return im


@pytest.fixture()
def class_folders(tmp_path):
    happy, sad = tmp_path / "happy_anime", tmp_path / "sad_anime"
    happy.mkdir(), sad.mkdir()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(happy / "a.png")
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))           # fully transparent -> white
    rgba.save(happy / "b.png")
    Image.new("P", (70, 70), 3).save(happy / "c.png")
    Image.new("L", (64, 96), 128).save(happy / "d.jpg")
    Image.new("RGB", (64, 64), (10, 200, 10)).save(sad / "e.webp")
    (sad / "e.txt").write_text("sad, tears, custom caption\n")
    # EXIF orientation 6: viewers rotate 90 degrees clockwise, so red ends up on top.
    exif = Image.Exif()
    exif[0x0112] = 6
    _two_tone().save(sad / "f.jpg", exif=exif.tobytes(), quality=95)
    # Bad files: Finder metadata, a truncated PNG, a text file renamed .png.
    (happy / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    buf = (happy / "a.png").read_bytes()
    (happy / "broken.png").write_bytes(buf[: len(buf) // 2])
    (sad / "notes.png").write_text("not an image")
    return tmp_path


def test_folder_per_class_captions_modes_and_bad_files(class_folders, capsys):
    with pytest.warns(UserWarning, match=r"skipped 3 unreadable"):
        ds = load_image_dataset(class_folders, resolution=32)
    assert ds.layout == "folders"
    assert len(ds) == 6 and len(ds.skipped) == 3
    captions = {r.path.name: r.caption for r in ds.records}
    assert captions == {"a.png": "happy anime", "b.png": "happy anime", "c.png": "happy anime",
                        "d.jpg": "happy anime", "e.webp": "sad, tears, custom caption", "f.jpg": "sad anime"}
    for i in range(len(ds)):
        item = ds[i]
        assert item["pixel_values"].shape == (3, 32, 32)
        assert -1.0 <= item["pixel_values"].min() and item["pixel_values"].max() <= 1.0
    arrays = {r.path.name: a for r, a in zip(ds.records, ds.images)}
    assert (arrays["b.png"] == 255).all()                                # transparency on white
    assert np.allclose(arrays["d.jpg"], 128, atol=2)                    # greyscale -> RGB
    top, bottom = arrays["f.jpg"][2, 16], arrays["f.jpg"][-3, 16]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200             # EXIF rotation applied
    out = capsys.readouterr().out
    assert "happy_anime: 4 images" in out and "sad_anime: 2 images" in out and "skipped 3" in out


def test_kohya_repeat_folders_honour_repeats(tmp_path, capsys):
    folder = tmp_path / "10_sakura"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 64), (i * 100, 0, 0)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"sakura, pose {i}")
    other = tmp_path / "2_background"
    other.mkdir()
    Image.new("RGB", (64, 64)).save(other / "x.png")
    ds = load_image_dataset(tmp_path, resolution=16)
    assert ds.layout == "kohya"
    assert len(ds.records) == 3 and len(ds) == 2 * 10 + 1 * 2
    assert sorted({ds[i]["caption"] for i in range(len(ds))}) == ["background", "sakura, pose 0", "sakura, pose 1"]
    assert "10_sakura: 2 images x 10 repeats = 20 samples" in capsys.readouterr().out


def test_imagefolder_with_metadata_jsonl(tmp_path):
    (tmp_path / "train").mkdir()
    rows = []
    for i in range(3):
        Image.new("RGB", (48, 64), (0, i * 50, 0)).save(tmp_path / "train" / f"{i}.png")
        rows.append({"file_name": f"train/{i}.png", "text": f"1girl, number {i}"})
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_image_dataset(tmp_path, resolution=24, verbose=False)
    assert ds.layout == "imagefolder"
    assert [ds[i]["caption"] for i in range(3)] == ["1girl, number 0", "1girl, number 1", "1girl, number 2"]
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file": "x.png"}) + "\n")
    with pytest.raises(ValueError, match="file_name"):
        load_image_dataset(tmp_path, resolution=24, verbose=False)


def test_random_flip_mirrors(tmp_path):
    (tmp_path / "a").mkdir()
    _two_tone((64, 64)).save(tmp_path / "a" / "x.png")
    ds = load_image_dataset(tmp_path, resolution=16, random_flip=True, verbose=False)
    plain = ds.pixel_values(0)
    assert plain[0, 8, 0] > 0.9 and plain[2, 8, -1] > 0.9                # red left, blue right
    assert np.array_equal(ds.pixel_values(0, flip=True).numpy(), plain.flip(-1).numpy())
    seen = {bool(ds[0]["flip"]) for _ in range(40)}
    assert seen == {True, False}


def test_wrong_path_and_empty_folder_say_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No training folder.*metadata\.jsonl"):
        load_image_dataset(tmp_path / "nope")
    (tmp_path / "happy_anime").mkdir()
    (tmp_path / "happy_anime" / ".DS_Store").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"No readable images.*folder per class"):
        with pytest.warns(UserWarning, match="skipped"):
            load_image_dataset(tmp_path)
