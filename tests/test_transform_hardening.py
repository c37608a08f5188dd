"""Issue 10 hardening of the transforms and StatsAccumulator, against float64 numpy references:
channel layouts of the accumulator, units in ``state_dict``, float input in other units,
accuracy whatever the memory layout, empty tensors, bfloat16, options checked where they enter."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import imagenorm
import imagenorm.functional as F
from conftest import assert_matches_reference, reference
from imagenorm import CTNormalize, DegenerateStatisticsError, MinMaxScale, OptionError, PercentileScale, Standardize
from imagenorm.errors import InputError


def randint(shape, low, high, dtype, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, shape, generator=generator, dtype=torch.int64).to(dtype)


def reference_standardize(x: torch.Tensor, mean, std, axis: int, factor: float = 1.0) -> np.ndarray:
    """(x * factor - mean) / std per channel along ``axis``, in float64."""
    shape = [1] * x.ndim
    shape[axis] = -1
    mean, std = np.asarray(mean, np.float64).reshape(shape), np.asarray(std, np.float64).reshape(shape)
    return (x.double().numpy() * factor - mean) / std


# --- item 2: StatsAccumulator layouts ---------------------------------------------------
class TestStatsAccumulatorLayouts:
    def test_channel_count_is_fixed_by_the_first_batch(self):
        colour = torch.full((2, 3, 2, 2), 200, dtype=torch.uint8)
        gray = torch.zeros((2, 1, 2, 2), dtype=torch.uint8)
        accumulator = imagenorm.StatsAccumulator()
        accumulator.update(colour)
        with pytest.raises(InputError, match=r"a batch of 1 channel\(s\) \(shape \(2, 1, 2, 2\)\) after batches of 3; pass convert="):
            accumulator.update(gray)
        stats = accumulator.compute()  # the refused batch left nothing behind
        assert [s.count for s in stats.channels] == [8, 8, 8] and [s.mean for s in stats.channels] == [200.0] * 3
        reverse = imagenorm.StatsAccumulator()
        reverse.update(gray)
        with pytest.raises(InputError, match=r"a batch of 3 channel\(s\) .* after batches of 1"):
            reverse.update(colour)

    def test_a_single_image_is_not_a_batch(self):
        image = randint((3, 8, 8), 0, 256, torch.uint8)
        with pytest.raises(InputError, match=r"got \(3, 8, 8\): one image \(C, H, W\) is not a batch; add a batch axis \(image\[None\]\)"):
            imagenorm.StatsAccumulator().update(image)
        accumulator = imagenorm.StatsAccumulator()
        accumulator.update(image[None])
        assert_matches_reference(accumulator.compute(), reference([image.numpy()]))

    @pytest.mark.parametrize("shape", [(8, 8), (1, 1, 2, 2, 2, 2)])
    def test_only_the_documented_layouts(self, shape):
        with pytest.raises(InputError, match=r"Expected a batch \(B, C, H, W\) or \(B, C, D, H, W\)"):
            imagenorm.StatsAccumulator().update(torch.zeros(shape, dtype=torch.uint8))

    def test_layout_is_fixed_by_the_first_batch(self):
        accumulator = imagenorm.StatsAccumulator()
        accumulator.update(torch.zeros((1, 2, 4, 4), dtype=torch.uint8))
        with pytest.raises(InputError, match=r"a batch \(B, C, D, H, W\) of shape \(1, 2, 3, 4, 4\) after batches \(B, C, H, W\)"):
            accumulator.update(torch.zeros((1, 2, 3, 4, 4), dtype=torch.uint8))

    def test_volumes_against_reference(self):
        volumes = randint((2, 2, 3, 5, 6), -500, 1500, torch.int16, seed=1)
        accumulator = imagenorm.StatsAccumulator()
        accumulator.update(volumes)
        assert accumulator.compute().channel_names == ("channel0", "channel1")
        assert_matches_reference(accumulator.compute(), reference(list(volumes.numpy())))

    def test_convert_gray_follows_the_rules_of_files(self):
        """RGB batches become Pillow's luma (convert("L")), gray batches stay: the statistics of
        both equal those of the same images converted by Pillow."""
        rgb = randint((2, 3, 6, 7), 0, 256, torch.uint8, seed=2)
        gray = randint((1, 1, 6, 7), 0, 256, torch.uint8, seed=3)
        accumulator = imagenorm.StatsAccumulator(convert="gray")
        accumulator.update(rgb)
        accumulator.update(gray)
        stats = accumulator.compute()
        luma = [np.asarray(Image.fromarray(image.permute(1, 2, 0).numpy()).convert("L"))[None] for image in rgb]
        assert_matches_reference(stats, reference(luma + [gray[0].numpy()]))
        assert stats.channel_names == ("gray",) and stats.read_options.convert == "gray"
        files_rule = imagenorm.compute_stats([image.numpy() for image in rgb] + [gray[0].numpy()], convert="gray")
        assert [s.mean for s in files_rule.channels] == [s.mean for s in stats.channels]

    def test_convert_rgb_repeats_gray(self):
        gray = randint((2, 1, 4, 4), 0, 256, torch.uint8, seed=4)
        rgb = randint((1, 3, 4, 4), 0, 256, torch.uint8, seed=5)
        accumulator = imagenorm.StatsAccumulator(convert="rgb")
        accumulator.update(gray)
        accumulator.update(rgb)
        expected = [np.repeat(image, 3, axis=0) for image in gray.numpy()] + [rgb[0].numpy()]
        assert_matches_reference(accumulator.compute(), reference(expected))

    def test_convert_is_checked(self):
        with pytest.raises(OptionError, match="convert='grey' is not one of 'gray', 'rgb'"):
            imagenorm.StatsAccumulator(convert="grey")

    def test_empty_batch_adds_nothing_and_pixel_less_images_are_refused(self):
        accumulator = imagenorm.StatsAccumulator()
        accumulator.update(torch.zeros((0, 1, 4, 4), dtype=torch.uint8))
        with pytest.raises(InputError, match="no image was added"):
            accumulator.compute()
        images = randint((2, 1, 4, 4), 0, 256, torch.uint8)
        accumulator.update(images)
        assert_matches_reference(accumulator.compute(), reference(list(images.numpy())))
        with pytest.raises(InputError, match=r"images without pixels: shape \(2, 1, 0, 4\)"):
            accumulator.update(torch.zeros((2, 1, 0, 4), dtype=torch.uint8))

    def test_bfloat16_is_measured_as_float32(self, tmp_path):
        values = torch.rand((3, 2, 5, 5), generator=torch.Generator().manual_seed(6)).bfloat16()
        accumulator = imagenorm.StatsAccumulator()
        accumulator.update(values)
        stats = accumulator.compute()
        assert stats.dtype == "float32" and stats.value_scale == 1.0
        ref = reference(list(values.float().numpy()))
        np.testing.assert_allclose([s.mean for s in stats.channels], [c["mean"] for c in ref["channels"]], rtol=1e-12)
        np.testing.assert_allclose([s.std for s in stats.channels], [c["std"] for c in ref["channels"]], rtol=1e-9)
        stats.save(tmp_path / "bf16.json")  # a stats file that loads (the dtype numpy does not know is not written)
        assert imagenorm.DatasetStats.load(tmp_path / "bf16.json").dtype == "float32"


# --- item 7: the units travel in state_dict ---------------------------------------------
def _uint8_stats():
    return imagenorm.compute_stats(torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16))


class TestStateDict:
    def test_8bit_state_into_a_hand_built_transform(self):
        original = Standardize.from_stats(_uint8_stats())
        hand_built = Standardize([0.0], [1.0])
        hand_built.load_state_dict(original.state_dict())
        x = torch.tensor([[[0, 128, 255]]], dtype=torch.uint8)
        assert torch.equal(hand_built(x), original(x))
        expected = reference_standardize(x, [127.5], [_uint8_stats().pooled.std], axis=0)
        np.testing.assert_allclose(hand_built(x).double().numpy(), expected, rtol=1e-6, atol=1e-6)
        floats = x.float() / 255
        assert torch.equal(hand_built(floats), original(floats))

    @pytest.mark.parametrize("name", ["standardize", "min_max", "percentile", "ct", "per_image", "volumes"])
    def test_every_option_is_restored(self, name):
        """Each saved transform differs from the blank one in the options that matter for it."""
        stats = imagenorm.compute_stats([randint((2, 6, 6), 0, 4096, torch.int16, seed) for seed in range(3)])
        x = randint((2, 2, 6, 6), 0, 4096, torch.int16, seed=7)
        saved, blank = {
            "standardize": (Standardize.from_stats(stats, channel_wise=False, input_scale=4095.0, dtype=torch.float64),
                            Standardize([0.0], [1.0])),
            "min_max": (MinMaxScale.from_stats(stats, out_range=(-1, 1), clip=True, eps=1.0),
                        MinMaxScale([0.0, 0.0], [1.0, 1.0])),
            "percentile": (PercentileScale.from_stats(stats, percentiles=(1, 99), clip=False, out_range=(0, 10)),
                           PercentileScale(values=([0.0], [1.0]))),
            "ct": (CTNormalize([1000.0], [300.0], clip_range=(500.0, 2500.0), value_scale=32767.0, stats_dtype="int16"),
                   CTNormalize([0.0], [1.0], clip_range=(-1.0, 1.0))),
            "per_image": (PercentileScale(percentiles=(5, 95), per_image=True, channel_wise=False, out_range=(-1, 1),
                                          mask="nonzero", eps=3.0),
                          PercentileScale(values=([0.0, 0.0], [1.0, 1.0]))),
            "volumes": (Standardize(per_image=True, spatial_dims=3), Standardize(per_image=True)),
        }[name]
        x = x[0] if name == "volumes" else x  # (C, D, H, W): one volume, or a batch of 2-D images
        x = x.float() / 4095 if name == "standardize" else x
        assert not torch.equal(blank(x), saved(x)) or blank(x).dtype != saved(x).dtype
        blank.load_state_dict(saved.state_dict())
        assert torch.equal(blank(x), saved(x)) and blank(x).dtype == saved(x).dtype
        assert blank.get_extra_state() == saved.get_extra_state()

    def test_state_survives_torch_save_with_weights_only(self):
        original = MinMaxScale.from_stats(_uint8_stats(), out_range=(-1, 1), clip=True)
        buffer = io.BytesIO()
        torch.save(original.state_dict(), buffer)
        buffer.seek(0)
        loaded = MinMaxScale([0.0], [1.0])
        loaded.load_state_dict(torch.load(buffer, weights_only=True))
        x = torch.tensor([[[0, 128, 255]]], dtype=torch.uint8)
        assert torch.equal(loaded(x), original(x))

    def test_state_of_another_transform_is_refused(self):
        with pytest.raises(OptionError, match="the state_dict is that of a MinMaxScale, not of a Standardize"):
            Standardize([0.0], [1.0]).load_state_dict(MinMaxScale([0.0], [255.0]).state_dict())

    def test_state_without_units_is_refused_unless_not_strict(self):
        original = Standardize.from_stats(_uint8_stats())
        old_style = {k: v for k, v in original.state_dict().items() if k != "_extra_state"}
        with pytest.raises(OptionError, match="does not say the units and options of this Standardize"):
            Standardize([0.0], [1.0]).load_state_dict(old_style)
        loaded = Standardize([0.0], [1.0], value_scale=255.0, stats_dtype="uint8")
        loaded.load_state_dict(old_style, strict=False)  # the caller states the units
        x = torch.tensor([[[0, 128, 255]]], dtype=torch.uint8)
        assert torch.equal(loaded(x), original(x))

    def test_a_callable_mask_does_not_travel(self):
        saved = Standardize(per_image=True, mask=lambda t: t > 10)
        with pytest.raises(OptionError, match="saved with a callable as mask, which a state_dict cannot carry"):
            Standardize(per_image=True).load_state_dict(saved.state_dict())
        receiver = Standardize(per_image=True, mask=lambda t: t > 10)
        receiver.load_state_dict(saved.state_dict())
        x = randint((1, 1, 5, 5), 0, 40, torch.uint8)
        assert torch.equal(receiver(x), saved(x))

    def test_inverse_carries_its_options(self):
        forward = Standardize([10.0, 20.0], [2.0, 4.0], spatial_dims=3, dtype=torch.float64)
        inverse = forward.inverse()
        blank = imagenorm.AffineInverse([1.0], [0.0])
        blank.load_state_dict(inverse.state_dict())
        y = torch.rand(2, 3, 4, 5, dtype=torch.float64)  # (C, D, H, W): one volume with spatial_dims=3
        assert blank.spatial_dims == 3 and torch.equal(blank(y), inverse(y)) and blank(y).dtype == torch.float64


# --- item 9: float input in other units ---------------------------------------------------
class TestFloatInputScale:
    def test_hounsfield_floats_are_refused_naming_input_scale(self):
        ct = CTNormalize([40.0], [350.0], clip_range=(-1000.0, 1500.0), value_scale=32767.0, stats_dtype="int16")
        hounsfield = torch.tensor([[[-1000, -80, 40, 3071]]], dtype=torch.int16)
        with pytest.raises(InputError, match=r"float input reaches 3071; transforms built from int16 statistics take "
                                             r"float input in the \[0, 1\] scale \(raw / 32767\); pass input_scale=1 for raw values"):
            ct(hounsfield.float())
        raw = CTNormalize([40.0], [350.0], clip_range=(-1000.0, 1500.0), value_scale=32767.0, stats_dtype="int16", input_scale=1.0)
        expected = (np.clip(hounsfield.double().numpy(), -1000, 1500) - 40) / 350
        np.testing.assert_allclose(raw(hounsfield.float()).double().numpy(), expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ct(hounsfield).double().numpy(), expected, rtol=1e-6, atol=1e-6)

    @pytest.mark.parametrize("method", ["standardize", "min_max", "percentile"])
    def test_0_255_floats_are_refused_for_8_bit_statistics(self, method):
        stats = _uint8_stats()
        t = {"standardize": Standardize.from_stats, "min_max": MinMaxScale.from_stats,
             "percentile": PercentileScale.from_stats}[method](stats)
        x = randint((2, 1, 8, 8), 0, 256, torch.uint8)
        with pytest.raises(InputError, match=r"float input reaches \d+; transforms built from uint8 statistics .*input_scale=1"):
            t(x.float())
        with pytest.raises(InputError, match="input_scale="):
            t(x.float().transpose(2, 3))  # the same values in another memory layout: the same answer
        unit = t(x.float() / 255)  # the [0, 1] scale, as documented
        torch.testing.assert_close(unit, t(x), rtol=1e-5, atol=1e-5)

    def test_functional_is_checked_too(self):
        with pytest.raises(InputError, match=r"transforms with value_scale=255 take float input in the \[0, 1\] scale"):
            F.standardize(torch.tensor([[0.0, 200.0]]), [100.0], [50.0], value_scale=255.0)
        with pytest.raises(InputError, match="input_scale="):
            F.min_max_scale(torch.tensor([[0.0, 200.0]]), [0.0], [255.0], value_scale=255.0)

    def test_the_check_on_the_torch_branch(self):
        """bfloat16 (and any device other than the CPU) is checked with torch operations: same rule."""
        t = Standardize([127.5], [64.0], value_scale=255.0)
        with pytest.raises(InputError, match="float input reaches -1000"):
            t(torch.tensor([[[-1000.0, 3.0, float("nan")]]]).bfloat16())
        nothing_finite = torch.full((1, 3, 3), float("nan")).bfloat16()
        assert torch.isnan(t(nothing_finite)).all()

    def test_from_stats_units_cannot_be_overridden(self):
        with pytest.raises(OptionError, match="value_scale= comes from the statistics in from_stats; pass input_scale="):
            Standardize.from_stats(_uint8_stats(), value_scale=1.0)
        with pytest.raises(OptionError, match="channel_wise= does not apply"):
            CTNormalize.from_stats(_uint8_stats(), channel_wise=True)

    def test_what_stays_accepted(self):
        t = Standardize([127.5], [64.0], value_scale=255.0)
        augmented = torch.tensor([[[-0.2, 0.5, 1.3, float("nan"), float("inf")]]])  # jitter past the ends; non-finite ignored
        expected = (augmented.double().numpy() * 255 - 127.5) / 64
        np.testing.assert_allclose(t(augmented).double().numpy(), expected, rtol=1e-6)
        stated = Standardize([127.5], [64.0], value_scale=255.0, input_scale=1.0)
        assert torch.isfinite(stated(torch.tensor([[[0.0, 255.0]]]))).all()
        float_stats = Standardize([1000.0], [10.0])  # value_scale 1: float statistics, float input is raw
        np.testing.assert_allclose(float_stats(torch.tensor([[[1010.0]]])).item(), 1.0)
        signed = Standardize([0.0], [1000.0], value_scale=32767.0)  # signed data reach -1 in the [0, 1] scale
        np.testing.assert_allclose(signed(torch.tensor([[[-1.0]]])).item(), -32.767, rtol=1e-6)


# --- item 21: accuracy whatever the memory layout --------------------------------------------
def _views(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "contiguous": x,
        "transposed": x.transpose(2, 3),
        "sliced": x[:, :, ::2, 1::3],
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "channels_first_view": x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2),
        "unbatched_view": x[1].permute(0, 2, 1),
        "expanded": x[:, :1].expand(-1, 3, -1, -1),
    }


class TestLayoutIndependentAccuracy:
    """Standardize([60000.3], [0.3]) on uint16: float32 x * s + b cancels digits (error 4.8e-3)."""

    @pytest.mark.parametrize("view", list(_views(torch.zeros(2, 3, 8, 12))))
    @pytest.mark.parametrize("path", ["kernel", "torch"])
    def test_same_accuracy_for_every_view(self, view, path, monkeypatch):
        if path == "torch":  # what a GPU, autograd or torch.compile runs
            monkeypatch.setattr(F, "_fused_path", lambda *args: False)
        x = _views(randint((2, 3, 8, 12), 59990, 60010, torch.int32, seed=8).to(torch.uint16))[view]
        mean, std = [60000.3, 60001.7, 59999.1], [0.3, 0.7, 1.1]
        t = Standardize(mean, std, value_scale=65535.0)
        expected = reference_standardize(x, mean, std, axis=x.ndim - 3)
        np.testing.assert_allclose(t(x).double().numpy(), expected, rtol=0, atol=2e-6 * np.abs(expected).max())

    @pytest.mark.parametrize("view", ["transposed", "sliced", "expanded"])
    def test_range_methods_and_per_image(self, view):
        x = _views(randint((2, 3, 8, 12), 40000, 40050, torch.int32, seed=9).to(torch.uint16))[view]
        values = x.double().numpy()
        y = MinMaxScale([39990.0] * 3, [40010.0] * 3, value_scale=65535.0)(x).double().numpy()
        np.testing.assert_allclose(y, (values - 39990) / 20, rtol=0, atol=1e-6 * np.abs(y).max())
        per_image = Standardize(per_image=True)(x).double().numpy()
        mean, std = values.mean(axis=(2, 3), keepdims=True), values.std(axis=(2, 3), keepdims=True)
        np.testing.assert_allclose(per_image, (values - mean) / std, rtol=0, atol=2e-6)

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    def test_gpu_equals_cpu(self):
        x = randint((2, 3, 8, 12), 59990, 60010, torch.int32, seed=10).to(torch.uint16)
        t = Standardize([60000.3] * 3, [0.3] * 3, value_scale=65535.0)
        expected = reference_standardize(x, [60000.3] * 3, [0.3] * 3, axis=1)
        for view in (x, x.transpose(2, 3)):
            on_gpu = t.to("cuda")(view.cuda()).cpu().double().numpy()
            reference_view = expected if view is x else expected.transpose(0, 1, 3, 2)
            np.testing.assert_allclose(on_gpu, reference_view, rtol=0, atol=2e-6 * np.abs(expected).max())


# --- item 27: empty tensors ------------------------------------------------------------------
EMPTY_SHAPES = [(0, 3, 4, 4), (3, 0, 4), (1, 3, 0, 4), (0, 4)]


def _transforms_for(shape):
    channels = 1 if len(shape) == 2 else shape[-3]
    return {
        "standardize": Standardize([10.0] * channels, [2.0] * channels, value_scale=255.0),
        "min_max": MinMaxScale([0.0] * channels, [255.0] * channels, value_scale=255.0, clip=True),
        "percentile": PercentileScale(values=([1.0] * channels, [200.0] * channels), value_scale=255.0),
        "standardize_per_image": Standardize(per_image=True),
        "min_max_per_image": MinMaxScale(per_image=True, mask="nonzero"),
        "percentile_per_image": PercentileScale(per_image=True, channel_wise=False),
    }


class TestEmptyTensors:
    @pytest.mark.parametrize("shape", EMPTY_SHAPES)
    @pytest.mark.parametrize("name", list(_transforms_for((1, 1, 1))))
    @pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
    def test_empty_in_empty_out(self, shape, name, dtype):
        t = _transforms_for(shape)[name]
        x = torch.zeros(shape, dtype=dtype)
        y = t(x)
        assert y.shape == x.shape and y.dtype == torch.float32 and y.device == x.device
        out = torch.empty(shape)
        assert t(x, out=out) is out

    def test_functional_and_inverse(self):
        x = torch.zeros((0, 2, 5, 5), dtype=torch.uint16)
        assert F.percentile_scale(x, per_image=True, q=(1, 99)).shape == x.shape
        assert F.standardize(x, [1.0, 2.0], [1.0, 1.0], dtype=torch.float64).dtype == torch.float64
        inverse = Standardize([1.0, 2.0], [3.0, 4.0]).inverse()
        assert inverse(torch.zeros((2, 0, 5))).shape == (2, 0, 5)


# --- bfloat16 and other dtypes ------------------------------------------------------------------
class TestDtypes:
    def test_bfloat16_input_against_reference(self):
        x = torch.rand((2, 3, 5, 5), generator=torch.Generator().manual_seed(11)).bfloat16()
        mean, std = [100.0, 120.0, 140.0], [50.0, 60.0, 70.0]
        y = Standardize(mean, std, value_scale=255.0)(x)
        expected = reference_standardize(x, mean, std, axis=1, factor=255.0)
        assert y.dtype == torch.float32
        np.testing.assert_allclose(y.double().numpy(), expected, rtol=1e-6, atol=1e-6)
        per_image = Standardize(per_image=True)(x).double().numpy()
        values = x.double().numpy()
        np.testing.assert_allclose(per_image, (values - values.mean(axis=(2, 3), keepdims=True))
                                   / values.std(axis=(2, 3), keepdims=True), rtol=1e-5, atol=1e-5)
        assert Standardize(mean, std, value_scale=255.0, dtype=torch.bfloat16)(x).dtype == torch.bfloat16

    def test_bool_input_is_the_unit_scale(self):
        x = torch.tensor([[[False, True]]])
        y = Standardize([127.5], [127.5], value_scale=255.0)(x)
        assert y.tolist() == [[[-1.0, 1.0]]]

    def test_complex_input_is_refused(self):
        with pytest.raises(InputError, match="Expected a tensor of pixel values .* got torch.complex64"):
            Standardize([0.0], [1.0])(torch.zeros((1, 2, 2), dtype=torch.complex64))
        with pytest.raises(InputError, match="pixel values"):
            Standardize(per_image=True)(torch.zeros((1, 2, 2), dtype=torch.complex64))


# --- options checked where they enter ------------------------------------------------------------
class TestOptionsCheckedEarly:
    def test_reversed_percentiles_say_so(self):
        with pytest.raises(OptionError, match=r"percentiles are reversed: \(99.5, 0.5\); give \(low, high\)"):
            PercentileScale(percentiles=(99.5, 0.5), per_image=True)
        with pytest.raises(OptionError, match=r"percentiles are reversed: \(99.5, 0.5\)"):
            F.percentile_scale(torch.zeros(1, 4, 4), q=(99.5, 0.5), per_image=True)

    @pytest.mark.parametrize("make, message", [
        (lambda: Standardize(per_image=True, mask="nonzer"), "mask must be 'nonzero', a boolean tensor or a callable, got 'nonzer'"),
        (lambda: Standardize(per_image=True, mask=torch.ones(2, 2)), "a mask tensor must be boolean, got torch.float32"),
        (lambda: Standardize([0.0], [1.0], value_scale=0), "value_scale must be a positive number, got 0"),
        (lambda: Standardize([0.0], [1.0], input_scale=-1.0), "input_scale must be a positive number, got -1.0"),
        (lambda: Standardize(per_image=True, eps=float("inf")), "eps must be a positive number, got inf"),
        (lambda: MinMaxScale([0.0], [1.0], out_range=(0, float("nan"))), r"out_range must be two different finite numbers"),
        (lambda: Standardize([0.0], [1.0], dtype="float32"), "dtype must be a float torch dtype, got 'float32'"),
        (lambda: Standardize([1.0, 2.0, 3.0], [1.0, 2.0]), "mean has 3 values and std 2: give one per channel"),
        (lambda: MinMaxScale([1.0, 2.0], [5.0, 6.0, 7.0]), "low has 2 values and high 3"),
        (lambda: Standardize(["a"], [1.0]), r"mean must be numbers, one per channel, got \['a'\]"),
        (lambda: Standardize([float("nan")], [1.0]), "channel 0 of the given mean has a non-finite mean"),
        (lambda: CTNormalize(None, None, clip_range=(0, 1), per_image=True), "CTNormalize takes the dataset's foreground statistics"),
    ])
    def test_at_construction(self, make, message):
        with pytest.raises(ValueError, match=message) as caught:
            make()
        assert isinstance(caught.value, imagenorm.ImagenormError)

    def test_functional_refuses_what_it_used_to_ignore(self):
        x = torch.rand(1, 4, 4)
        with pytest.raises(DegenerateStatisticsError, match="channel 0 of the given std has std 0"):
            F.standardize(x, [0.5], [0.0])  # was: inf and NaN, silently
        with pytest.raises(DegenerateStatisticsError, match=r"range \(high - low\) 0"):
            F.min_max_scale(x, [0.5], [0.5])
        with pytest.raises(OptionError, match="give mean and std, or per_image=True, not both"):
            F.standardize(x, [0.5], [0.2], per_image=True)  # was: the given numbers silently ignored
        with pytest.raises(OptionError, match="mean is missing"):
            F.standardize(x)
        with pytest.raises(OptionError, match="mask must be"):
            F.standardize(x, per_image=True, mask="inside")
