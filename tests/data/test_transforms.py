"""Per-image recipes of docs/method.md §4: output format, statistics of the random ops, determinism."""
import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from slimdet.config import ConfigError, get_cfg
from slimdet.data import transforms as tr
from slimdet.data.transforms import RandomGaussianBlur, build_view_transform

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _cfg(recipe: str, crop: int = 16):
    cfg = get_cfg()
    cfg.INPUT.AUGMENTATION = recipe
    cfg.INPUT.CROP_SIZE = crop
    return cfg


def _vivid(seed: int = 0, size=(24, 20)) -> Image.Image:
    """Saturated colours everywhere, so only the grayscale op can make R == G == B."""
    rng = np.random.default_rng(seed)
    hsv = np.stack([rng.integers(0, 256, size[::-1]), np.full(size[::-1], 255),
                    rng.integers(150, 256, size[::-1])], -1).astype(np.uint8)
    return Image.fromarray(hsv, "HSV").convert("RGB")


def _unnormalize(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)


def _is_gray(view: torch.Tensor) -> bool:
    rgb = _unnormalize(view)
    return bool((rgb[0] - rgb[1]).abs().max() < 1e-3 and (rgb[1] - rgb[2]).abs().max() < 1e-3)


class _BlurCounter:
    def __init__(self, monkeypatch):
        self.calls = 0
        real = RandomGaussianBlur.blur

        def counting(img, sigma):
            assert 0.1 <= sigma <= 2.0
            self.calls += 1
            return real(img, sigma)
        monkeypatch.setattr(RandomGaussianBlur, "blur", staticmethod(counting))


@pytest.mark.parametrize("recipe,n_views", [("MoCoV2", 2), ("BYOL", 2), ("SimCLR", 2),
                                            ("LinearEval", 1)])
def test_views_shape_dtype_and_range(recipe, n_views):
    views = build_view_transform(_cfg(recipe, crop=24), is_train=True)(_vivid(size=(40, 30)))
    assert len(views) == n_views
    for v in views:
        assert type(v) is torch.Tensor and v.dtype == torch.float32 and v.shape == (3, 24, 24)
        rgb = _unnormalize(v)
        assert rgb.min() >= -1e-5 and rgb.max() <= 1 + 1e-5


def test_normalisation_and_eval_view_match_torchvision():
    cfg = _cfg("MoCoV2", crop=24)
    cfg.INPUT.TEST_RESIZE = 28
    img = _vivid(3, size=(50, 36))
    (view,) = build_view_transform(cfg, is_train=False)(img)
    ref = T.Compose([T.Resize(28), T.CenterCrop(24), T.ToTensor(), T.Normalize(MEAN, STD)])(img)
    assert view.shape == (3, 24, 24)
    torch.testing.assert_close(view, ref, atol=1e-5, rtol=0)
    # A constant image normalises to (c / 255 - mean) / std exactly.
    const = Image.new("RGB", (30, 30), (255, 0, 128))
    (v,) = build_view_transform(cfg, is_train=False)(const)
    expected = (torch.tensor([255, 0, 128]) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(v[:, 5, 5], expected, atol=1e-5, rtol=0)


def test_mocov2_grayscale_and_blur_frequencies(monkeypatch):
    blur = _BlurCounter(monkeypatch)
    t = build_view_transform(_cfg("MoCoV2"), is_train=True)
    img = _vivid()
    n_calls = 600  # 1200 views
    gray = sum(_is_gray(v) for s in range(n_calls) for v in t(img, seed=s))
    views = 2 * n_calls
    # Binomial standard deviations: 0.012 (gray) and 0.014 (blur); allow > 4 sigma.
    assert abs(gray / views - 0.2) < 0.05
    assert abs(blur.calls / views - 0.5) < 0.06


def test_byol_view1_always_blurred_view2_rarely(monkeypatch):
    blur = _BlurCounter(monkeypatch)
    t = build_view_transform(_cfg("BYOL"), is_train=True)
    img = _vivid(1)
    n = 400
    for s in range(n):
        torch.manual_seed(s)
        t.views[0](img)
    assert blur.calls == n
    blur.calls = 0
    for s in range(n):
        torch.manual_seed(s)
        t.views[1](img)
    assert abs(blur.calls / n - 0.1) < 0.06


def test_byol_view2_solarizes_about_one_in_five():
    # Every other op keeps a white image uniform and >= 153 (brightness factor >= 0.6; contrast,
    # saturation, hue, grayscale, blur, crop and flip change nothing), so only solarize darkens it.
    cfg = _cfg("BYOL")
    t = build_view_transform(cfg, is_train=True)
    white = Image.new("RGB", (16, 16), (255, 255, 255))
    n, dark = 400, 0
    for s in range(n):
        torch.manual_seed(s)
        rgb = _unnormalize(t.views[1](white))
        dark += bool(rgb.mean() < 0.5)
    assert abs(dark / n - 0.2) < 0.06


def test_blur_really_blurs():
    checker = Image.fromarray((np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)).convert("RGB")
    out = np.asarray(RandomGaussianBlur(p=1.0, sigma=(1.0, 1.0))(checker)).astype(float)
    assert np.abs(np.diff(out[..., 0], axis=1)).mean() < 0.2 * 255


def test_simclr_uses_strong_jitter():
    def walk(t):
        yield t
        for child in getattr(t, "transforms", []):
            yield from walk(child)

    view, _ = build_view_transform(_cfg("SimCLR"), is_train=True).views
    jitters = [m for m in walk(view) if isinstance(m, tr.v2.ColorJitter)]
    assert len(jitters) == 1
    j = jitters[0]
    assert j.brightness == pytest.approx((0.2, 1.8)) and j.contrast == pytest.approx((0.2, 1.8))
    assert j.saturation == pytest.approx((0.2, 1.8)) and j.hue == pytest.approx((-0.2, 0.2))


def test_seeded_views_are_reproducible_and_leave_global_rng_alone():
    t = build_view_transform(_cfg("MoCoV2"), is_train=True)
    img = _vivid(2)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = t(img, seed=7), t(img, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = t(img, seed=8)
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[1])  # the two views are independent draws


def test_unknown_recipe_names_the_key():
    with pytest.raises(ConfigError, match="INPUT.AUGMENTATION.*'MoCoV9'"):
        build_view_transform(_cfg("MoCoV9"), is_train=True)


@pytest.mark.parametrize("size,crop,resize,expected_short", [
    ((32, 32), 32, 0, 36), ((28, 28), 32, 0, 36), ((64, 48), 32, 0, 36), ((50, 36), 24, 28, 28),
    ((300, 200), 224, 0, 256)])
def test_in_memory_and_per_image_evaluation_views_agree(size, crop, resize, expected_short):
    """The default short side is CROP_SIZE / 0.875 for any image size, and in-memory batches
    are evaluated as the per-image path evaluates a folder (equal to within a grey level)."""
    from slimdet.data.batch_transforms import eval_batch_transform
    from slimdet.data.recipes import eval_spec

    from image_helpers import make_image

    cfg = _cfg("MoCoV2", crop=crop)
    cfg.INPUT.TEST_RESIZE = resize
    assert eval_spec(cfg).resize == expected_short
    rng = np.random.default_rng(0)
    images = [make_image(rng, *size) for _ in range(4)]
    per_image = torch.stack([build_view_transform(cfg, is_train=False)(im)[0] for im in images])
    batch = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images])
    batched = eval_batch_transform(cfg)(batch)
    assert per_image.shape == batched.shape == (4, 3, crop, crop)
    grey_levels = (_unnormalize(per_image) - _unnormalize(batched)).abs() * 255
    assert grey_levels.max() <= 1.5 and grey_levels.mean() <= 0.5
    # Not a plain resize to the crop: the centre crop of the larger resize is what is compared.
    plain = torch.nn.functional.interpolate(batch.float() / 255, size=(crop, crop),
                                            mode="bilinear", antialias=True)
    assert (_unnormalize(batched) - plain).abs().mean() * 255 > 2
