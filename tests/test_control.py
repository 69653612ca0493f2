"""animegen_utils.control: preprocessing, img2img emotion transfer, sketches, edge metrics."""

import numpy as np
import pytest
from PIL import Image

from animegen_utils import generate, load_pipeline, read_parameters
from animegen_utils.control import canny_map, prepare_image, sketch_to_control
from animegen_utils.control.img2img import DEFAULT_STRENGTH, emotion_prompt, strength_sweep, transfer_emotion
from animegen_utils.control.preprocess import auto_canny_thresholds, canny_edges, load_image
from animegen_utils.control.sketches import SKETCHES, draw_sketch
from animegen_utils.evaluate.edges import edge_f1, edge_precision_recall, img2img_scores
from animegen_utils.generation import image_sha256
from animegen_utils.prompts import CharacterSheet


def _square(size=32, lo=8, hi=24, value=255):
    a = np.zeros((size, size), np.uint8)
    a[lo:hi, lo:hi] = value
    return Image.fromarray(a)


# --------------------------------------------------------------------------- preprocessing

def test_canny_finds_the_square_exactly_where_it_is():
    edges = canny_edges(_square())
    ys, xs = np.nonzero(edges)
    # The square covers rows/cols 8..23: every edge lies on its outline, within a pixel (canny puts the
    # top/left edges just outside, the bottom/right ones just inside, and cuts the corners).
    assert all(min(abs(y - 7.5), abs(y - 23)) <= 0.5 or min(abs(x - 7.5), abs(x - 23)) <= 0.5
               for y, x in zip(ys, xs))
    assert edges[7, 9:23].all() and edges[23, 8:24].all() and edges[9:23, 7].all() and edges[8:24, 23].all()
    assert set(ys) == set(range(7, 24)) and set(xs) == set(range(7, 24))
    assert edges.sum() == 60  # recorded from a run; 4 sides of 15-17 px
    assert not edges[10:21, 10:21].any() and not edges[:6].any() and not edges[25:].any()


def test_canny_map_is_white_on_black_rgb_and_deterministic():
    a, b = canny_map(_square()), canny_map(_square())
    assert a.mode == "RGB" and a.size == (32, 32)
    arr = np.asarray(a)
    assert set(np.unique(arr)) == {0, 255}
    assert a.tobytes() == b.tobytes()
    assert (arr[..., 0] > 0).sum() == 60


def test_canny_thresholds_automatic_and_explicit():
    grey = np.full((8, 8), 150, np.uint8)
    assert auto_canny_thresholds(grey) == (100, 199)
    # A faint square (contrast 30) disappears with high thresholds, not with low ones.
    faint = _square(value=30)
    assert canny_edges(faint, 5, 10).sum() > 0
    assert canny_edges(faint, 200, 400).sum() == 0
    with pytest.raises(ValueError, match="both"):
        canny_map(faint, low=10)
    with pytest.raises(ValueError, match="low <= high"):
        canny_map(faint, low=100, high=50)


def test_no_edges_warns_and_still_returns_an_image():
    blank = Image.new("RGB", (16, 16), (128, 128, 128))
    with pytest.warns(UserWarning, match="no edges"):
        out = canny_map(blank)
    assert out.size == (16, 16) and not np.asarray(out).any()
    with pytest.warns(UserWarning, match="no edges"):
        sketch_to_control(Image.new("L", (40, 40), 230))


def _pencil_circle(invert=False, width=200, height=200):
    """A dark circle stroke on uneven, grainy paper with specks: what a phone photo looks like."""
    import cv2

    yy, xx = np.mgrid[0:height, 0:width]
    paper = 230 - 60 * xx / width                    # a shadow across the page
    paper = paper + np.random.default_rng(0).normal(0, 4, paper.shape)
    lines = np.zeros((height, width), np.uint8)
    cv2.circle(lines, (width // 2, height // 2), 60, 255, 4)
    img = np.where(lines > 0, 40.0, paper)
    for y, x in [(20, 30), (170, 40), (30, 170)]:    # dust specks, 1 px
        img[y, x] = 30
    img = np.clip(img, 0, 255).astype(np.uint8)
    return Image.fromarray(255 - img if invert else img), lines > 0


@pytest.mark.parametrize("invert", [False, True], ids=["dark-on-light", "light-on-dark"])
def test_sketch_to_control_keeps_the_stroke_and_drops_specks_and_shadow(invert):
    photo, stroke = _pencil_circle(invert)
    out = np.asarray(sketch_to_control(photo))[..., 0] > 0
    assert out.shape == stroke.shape
    assert (out & stroke).sum() / stroke.sum() > 0.95       # the line is there...
    assert (out & ~stroke).sum() == 0                        # ...and nothing else: no specks, no shadow
    assert not out[20, 30] and not out[170, 40]


def test_sketch_to_control_resizes_to_a_square_without_cutting():
    wide, _ = _pencil_circle(width=300, height=200)
    out = sketch_to_control(wide, size=64)
    arr = np.asarray(out)[..., 0] > 0
    assert out.size == (64, 64) and out.mode == "RGB"
    ys, xs = np.nonzero(arr)
    # Radius 60 at (150, 100) -> padded to 300x300, centre (150, 150) -> x 64/300: radius 12.8 at (32, 32).
    assert 18 <= xs.min() <= 20 and 44 <= xs.max() <= 46 and 18 <= ys.min() <= 20 and 44 <= ys.max() <= 46
    assert arr.sum() > 50


def test_inputs_paths_modes_and_errors(tmp_path):
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))          # fully transparent -> white paper
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    pal = Image.new("P", (20, 20), 3)
    assert load_image(pal).mode == "RGB"
    grey = Image.new("L", (20, 20), 77)
    assert load_image(grey).getpixel((5, 5)) == (77, 77, 77)
    grey.save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").getpixel((5, 5)) == (77, 77, 77)
    (tmp_path / "notes.txt").write_text("not a picture")
    with pytest.raises(ValueError, match="not an image file"):
        canny_map(str(tmp_path / "notes.txt"))
    with pytest.raises(FileNotFoundError):
        sketch_to_control(tmp_path / "missing.png")
    with pytest.raises(TypeError, match="PIL.Image or a path"):
        canny_map(np.zeros((4, 4), np.float32).tolist())
    with pytest.raises(TypeError, match="PIL.Image or a path"):
        prepare_image(42, 64)
    with pytest.raises(ValueError, match="multiple of 8"):
        prepare_image(grey, 60)


def test_prepare_image_keeps_aspect_by_centre_crop():
    a = np.zeros((64, 128, 3), np.uint8)
    a[:, :32] = (255, 0, 0)
    a[:, 32:96] = (0, 255, 0)
    a[:, 96:] = (0, 0, 255)
    out = prepare_image(Image.fromarray(a), 64)
    assert out.size == (64, 64)
    arr = np.asarray(out).astype(int)
    assert (arr[:, 2:62, 1] > 240).all() and (arr[:, 2:62, 0] < 15).all()   # only the green middle


# --------------------------------------------------------------------------- metrics

def test_edge_f1_sanity():
    ctrl = canny_map(_square())
    assert edge_f1(ctrl, ctrl, output_is_edge_map=True) == 1.0
    assert edge_f1(ctrl, _square()) == 1.0                     # the picture the control came from
    blank = Image.new("RGB", (32, 32))
    assert edge_f1(ctrl, blank) == 0.0
    assert edge_f1(blank, _square()) == 0.0
    shifted = Image.fromarray(np.roll(np.asarray(ctrl), 1, axis=1))   # 1 px to the right: within tolerance
    assert edge_f1(ctrl, shifted, output_is_edge_map=True) == 1.0
    diagonal = Image.fromarray(np.roll(np.asarray(ctrl), (1, 1), axis=(0, 1)))  # 1.4 px at the corners
    assert 0.9 < edge_f1(ctrl, diagonal, output_is_edge_map=True) < 1.0
    far = canny_map(_square(lo=11, hi=27))
    p, r = edge_precision_recall(ctrl, far, tolerance=1, output_is_edge_map=True)
    assert 0 < p < 0.5 and 0 < r < 0.5
    assert edge_f1(ctrl, far, tolerance=4, output_is_edge_map=True) == 1.0
    with pytest.raises(ValueError, match="sizes differ"):
        edge_f1(ctrl, Image.new("RGB", (16, 16)))


class _FakeProbe:
    """The outside-world stand-in here is the probe's reading, given directly."""

    def __init__(self, readings):
        self.readings = readings

    def predict(self, images):
        return {k: v[: len(images)] for k, v in self.readings.items()}


def test_img2img_scores_count_hits_and_identity():
    readings = {"emotion": ["sad", "sad", "happy", "sad"], "hair_color": ["pink", "pink", "pink", "blue"],
                "eye_color": ["red", "red", "blue", "red"], "hairstyle": ["twintails"] * 4}
    src = {"hair_color": "pink", "eye_color": "red", "hairstyle": "twintails"}
    s = img2img_scores(_FakeProbe(readings), [None] * 4, "sad", src)
    assert s == {"emotion_hit": 0.75, "hair_kept": 0.75, "eyes_kept": 0.75, "hairstyle_kept": 1.0,
                 "identity_kept": 0.5}
    with pytest.raises(ValueError, match="empty"):
        img2img_scores(_FakeProbe(readings), [], "sad", src)


# --------------------------------------------------------------------------- img2img

def test_transfer_emotion_records_hash_and_strength(dummy_pipe, tmp_path):
    [src] = generate(dummy_pipe, "1girl, smile", seed=3, steps=2, progress=False)
    g = transfer_emotion(dummy_pipe, src.image, "sad", strength=0.5, seed=1, steps=4)
    assert g.image.size == (64, 64)
    assert g.params["task"] == "img2img" and g.params["strength"] == 0.5
    assert g.params["image_sha256"] == image_sha256(src.image)
    assert "sad" in g.params["prompt"]
    g.save(tmp_path / "out.png")
    assert read_parameters(tmp_path / "out.png")["image_sha256"] == image_sha256(src.image)
    # Seeded: the same call gives the same pixels; a path gives the same as the image.
    src.image.save(tmp_path / "src.png")
    again = transfer_emotion(dummy_pipe, tmp_path / "src.png", "sad", strength=0.5, seed=1, steps=4)
    assert again.image.tobytes() == g.image.tobytes()


def test_transfer_emotion_reuses_components_and_validates(dummy_pipe):
    [src] = generate(dummy_pipe, "1girl", seed=0, steps=2, progress=False)
    transfer_emotion(dummy_pipe, src.image, "happy", strength=0.5, steps=2)
    img2img = dummy_pipe._animegen_img2img
    assert img2img.unet is dummy_pipe.unet and img2img.vae is dummy_pipe.vae
    assert img2img.text_encoder is dummy_pipe.text_encoder
    for bad in (-0.1, 1.5, "0.5", True):
        with pytest.raises(ValueError, match=r"strength must be a number in \[0, 1\]"):
            transfer_emotion(dummy_pipe, src.image, "happy", strength=bad)
    with pytest.raises(ValueError, match="no denoising step"):
        transfer_emotion(dummy_pipe, src.image, "happy", strength=0.01, steps=20)
    with pytest.raises(ValueError, match="Valid choices: happy"):
        transfer_emotion(dummy_pipe, src.image, "smug")
    with pytest.raises(TypeError, match="PIL.Image or a path"):
        transfer_emotion(dummy_pipe, np.zeros((64, 64, 3)), "happy")


def test_strength_zero_is_the_source(dummy_pipe):
    [src] = generate(dummy_pipe, "1girl", seed=0, steps=2, progress=False)
    row = strength_sweep(dummy_pipe, src.image, "angry", strengths=(0.0, 0.5, 1.0), steps=4)
    assert [g.params["strength"] for g in row] == [0.0, 0.5, 1.0]
    assert row[0].image.tobytes() == src.image.tobytes()
    assert row[1].image.tobytes() != row[2].image.tobytes() != src.image.tobytes()
    assert 0 < DEFAULT_STRENGTH < 1


def test_emotion_prompt_without_style_drops_outfit_tags():
    sheet = CharacterSheet("pink", "red", "twintails")
    p = emotion_prompt("sad", character=sheet)
    assert "tears" in p.tags and "pink hair" in p.tags and "hoodie" not in p.tags and "casual" not in p.tags
    assert "school uniform" in emotion_prompt("sad", "school_uniform").positive


# --------------------------------------------------------------------------- sketches

def test_sample_sketches_are_deterministic_and_become_controls():
    for name in SKETCHES:
        a, b = draw_sketch(name), draw_sketch(name)
        assert a.tobytes() == b.tobytes() and a.size == (384, 384)
        clean = sketch_to_control(draw_sketch(name, paper=False), size=64)
        photo = sketch_to_control(a, size=64)
        # Paper grain and shadow change nothing that matters: the same lines within a pixel.
        assert edge_f1(clean, photo, output_is_edge_map=True) > 0.9
    with pytest.raises(ValueError, match="Valid choices: tilted"):
        draw_sketch("dragon")


def test_shipped_sketches_match_the_code():
    from animegen_utils import paths

    for name in SKETCHES:
        shipped = sketch_to_control(paths.data_dir("sketches") / f"{name}.jpg", size=64)
        fresh = sketch_to_control(draw_sketch(name), size=64)
        assert edge_f1(shipped, fresh, output_is_edge_map=True) > 0.95   # JPEG artefacts only


def test_random_poses_stay_in_the_picture_and_vary_the_layout():
    from animegen_utils.control.sketches import random_pose, random_sketches
    from animegen_utils.evaluate import prompt_for
    from animegen_utils.evaluate.edges import held_out_sketches

    rng = np.random.default_rng(3)
    for pose in (random_pose(rng) for _ in range(200)):
        assert pose.cy - 1.35 * pose.head >= 0.0                         # the top of the hair
        assert pose.cy + 1.15 * pose.head + pose.neck + 0.05 <= 1.0      # the neck's base
    a, b = random_sketches(3, seed=9), random_sketches(3, seed=9)
    assert [p for p, _ in a] == [p for p, _ in b] and all(x.tobytes() == y.tobytes() for (_, x), (_, y) in zip(a, b))

    controls, prompts, photos = held_out_sketches(12, seed=5)
    assert len(controls) == len(prompts) == len(photos) == 12
    centres = []
    for control in controls:
        ys, xs = np.nonzero(np.asarray(control)[..., 0] > 127)
        assert len(xs) > 60                                               # a figure, not specks
        centres.append((xs.mean(), ys.mean()))
    # Not the renderer's one centred layout: the figures sit in different places.
    assert np.std([c[0] for c in centres]) > 2 and np.std([c[1] for c in centres]) > 2
    drawn = random_sketches(12, seed=5)
    for (pose, _), prompt in zip(drawn, prompts):
        assert {"long": "long hair", "short": "short hair", "twintails": "twintails"}[pose.hair] in str(prompt)
    # The requests behind the prompts (what the probe checks) come with them on request.
    *_, requests = held_out_sketches(12, seed=5, with_requests=True)
    assert [prompt_for(r) for r in requests] == prompts
