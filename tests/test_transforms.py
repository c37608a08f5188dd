"""Transforms against float64 numpy references: every method, dtype, layout and policy."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import imagenorm
import imagenorm.functional as F
from imagenorm import DegenerateStatisticsError, MinMaxScale, PercentileScale, Standardize

INPUT_DTYPES = [torch.uint8, torch.uint16, torch.int16, torch.int32, torch.float16, torch.float32, torch.float64]
SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"


def make_input(dtype: torch.dtype, shape, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.rand(shape, generator=generator, dtype=torch.float64).to(dtype)
    high = 4096 if dtype != torch.uint8 else 256
    low = -2048 if dtype in (torch.int16, torch.int32) else 0
    return torch.randint(low, high, shape, generator=generator, dtype=torch.int64).to(dtype)


def raw_units(x: torch.Tensor, value_scale: float) -> np.ndarray:
    """What the transforms take the input to mean, in raw units (float64)."""
    values = x.double().numpy()
    return values * value_scale if x.dtype.is_floating_point else values


def per_channel(values, x: torch.Tensor, axis: int | None) -> np.ndarray:
    shape = [1] * x.ndim
    if axis is not None:
        shape[axis] = -1
    return np.asarray(values, np.float64).reshape(shape)


def tolerance(dtype: torch.dtype) -> dict:
    return {"rtol": 2e-3, "atol": 2e-3} if dtype == torch.float16 else {"rtol": 1e-6, "atol": 1e-6}


class TestStandardize:
    @pytest.mark.parametrize("dtype", INPUT_DTYPES)
    @pytest.mark.parametrize("shape, spatial_dims", [((5, 7), 2), ((3, 5, 7), 2), ((2, 3, 5, 7), 2), ((3, 4, 5, 6), 3), ((2, 3, 4, 5, 6), 2)])
    def test_correctness_against_reference(self, dtype, shape, spatial_dims):
        x = make_input(dtype, shape)
        axis = F.channel_axis(x, spatial_dims)
        channels = 1 if axis is None else shape[axis]
        mean, std = np.linspace(10, 30, channels), np.linspace(100, 300, channels)
        value_scale = 4095.0
        t = Standardize(mean, std, value_scale=value_scale, spatial_dims=spatial_dims)
        if not dtype.is_floating_point:
            factor = value_scale / torch.iinfo(dtype).max
            expected = (x.double().numpy() * factor - per_channel(mean, x, axis)) / per_channel(std, x, axis)
        else:
            expected = (raw_units(x, value_scale) - per_channel(mean, x, axis)) / per_channel(std, x, axis)
        y = t(x)
        assert y.dtype == torch.float32 and y.shape == x.shape
        np.testing.assert_allclose(y.double().numpy(), expected, **tolerance(dtype))

    @pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16])
    def test_from_stats_integer_raw_and_float_unit_scale_agree(self, dtype, rng):
        images = [make_input(dtype, (3, 6, 8), seed) for seed in range(4)]
        stats = imagenorm.compute_stats(images)
        t = Standardize.from_stats(stats)
        batch = torch.stack(images)
        from_integers = t(batch)
        from_floats = t(batch.double() / torch.iinfo(dtype).max)
        np.testing.assert_allclose(from_integers.numpy(), from_floats.numpy(), rtol=1e-5, atol=1e-5)
        # the output over the whole dataset really has mean 0 and std 1 per channel
        values = from_integers.double().transpose(0, 1).reshape(3, -1)
        np.testing.assert_allclose(values.mean(1).numpy(), 0, atol=1e-6)
        np.testing.assert_allclose(values.std(1, correction=0).numpy(), 1, atol=1e-6)

    def test_pooled_uses_one_value(self):
        images = [make_input(torch.uint8, (3, 6, 8), seed) for seed in range(3)]
        stats = imagenorm.compute_stats(images)
        t = Standardize.from_stats(stats, channel_wise=False)
        assert t.mean.shape == (1,)
        y = t(torch.stack(images)).double()
        assert abs(float(y.mean())) < 1e-6 and abs(float(y.std(correction=0)) - 1) < 1e-6

    def test_input_scale(self):
        t = Standardize([100.0], [50.0], value_scale=255.0, input_scale=1000.0)
        assert torch.allclose(t(torch.tensor([[0.1, 0.15]])), torch.tensor([[0.0, 1.0]]), atol=1e-6)

    def test_stats_of_another_integer_dtype_is_an_error(self):
        stats = imagenorm.compute_stats([make_input(torch.uint16, (1, 4, 4))])
        with pytest.raises(ValueError, match="measured on uint16 pixels, but the input is uint8"):
            Standardize.from_stats(stats)(torch.zeros(1, 4, 4, dtype=torch.uint8))

    def test_channel_count_mismatch(self):
        with pytest.raises(ValueError, match=r"Expected 3 channel\(s\), got a tensor of shape \(2, 4, 4\) with 2"):
            Standardize([1.0, 2.0, 3.0], [1.0, 1.0, 1.0])(torch.zeros(2, 4, 4))

    def test_bad_shape(self):
        with pytest.raises(ValueError, match=r"Expected a tensor of shape \(H, W\), \(C, H, W\) or \(B, C, H, W\), got \(7,\)"):
            Standardize([1.0], [1.0])(torch.zeros(7))


class TestRangeMethods:
    @pytest.mark.parametrize("dtype", INPUT_DTYPES)
    @pytest.mark.parametrize("out_range", [(0.0, 1.0), (-1.0, 1.0)])
    def test_min_max_from_stats(self, dtype, out_range):
        images = [make_input(dtype, (3, 5, 6), seed) for seed in range(3)]
        stats = imagenorm.compute_stats([i.double() if i.dtype == torch.float16 else i for i in images])
        t = MinMaxScale.from_stats(stats, out_range=out_range)
        if dtype == torch.float16:
            t.stats_dtype = None
        y = t(torch.stack(images))
        np.testing.assert_allclose(float(y.min()), out_range[0], atol=2e-3)
        np.testing.assert_allclose(float(y.max()), out_range[1], atol=2e-3)
        low = np.array([s.min for s in stats.channels]).reshape(1, 3, 1, 1)
        high = np.array([s.max for s in stats.channels]).reshape(1, 3, 1, 1)
        x = torch.stack(images).double().numpy()
        expected = (x - low) / (high - low) * (out_range[1] - out_range[0]) + out_range[0]
        np.testing.assert_allclose(y.double().numpy(), expected, **tolerance(dtype))

    def test_normalize_0_1_is_not_min_max(self):
        x = torch.tensor([[[50, 100, 150]]], dtype=torch.uint8)
        stats = imagenorm.compute_stats(x)
        assert MinMaxScale.from_stats(stats)(x).tolist() == [[[0.0, 0.5, 1.0]]]
        identity = Standardize([0.0], [1.0])(x.float() / 255)  # what torchvision's Normalize(0, 1) does
        assert torch.equal(identity, x.float() / 255)

    def test_percentile_from_stats_clips(self):
        x = torch.arange(1000, dtype=torch.int16).reshape(1, 10, 100)
        x[0, 0, 0] = 30000  # an outlier
        stats = imagenorm.compute_stats(x)
        t = PercentileScale.from_stats(stats, percentiles=(1, 99))
        y = t(x)
        assert float(y.max()) == 1.0 and float(y.min()) == 0.0
        p1, p99 = np.percentile(x.numpy(), [1, 99])
        np.testing.assert_allclose(y[0, 5, 50].item(), (x[0, 5, 50].item() - p1) / (p99 - p1), rtol=1e-6)

    def test_percentile_not_in_stats(self):
        stats = imagenorm.compute_stats(torch.arange(16, dtype=torch.uint8).reshape(1, 4, 4))
        with pytest.raises(ValueError, match="has no percentile 2"):
            PercentileScale.from_stats(stats, percentiles=(2, 98))


class TestPerImage:
    @pytest.mark.parametrize("channel_wise", [True, False])
    def test_standardize_per_image(self, channel_wise):
        x = make_input(torch.uint16, (4, 3, 9, 11))
        y = Standardize(per_image=True, channel_wise=channel_wise)(x).double()
        dims = (2, 3) if channel_wise else (1, 2, 3)
        np.testing.assert_allclose(y.mean(dim=dims).numpy(), 0, atol=1e-6)
        np.testing.assert_allclose(y.std(dim=dims, correction=0).numpy(), 1, atol=1e-6)

    def test_batched_equals_unbatched(self):
        x = make_input(torch.uint8, (5, 3, 8, 9))
        for t in (Standardize(per_image=True), MinMaxScale(per_image=True), PercentileScale(per_image=True)):
            batched = t(x)
            for index in range(5):
                torch.testing.assert_close(batched[index], t(x[index]))

    def test_masks(self):
        x = make_input(torch.int16, (2, 1, 10, 10)).clamp(min=0)
        x[:, :, :3] = 0  # background
        reference = []
        for item in x.double().numpy():
            inside = item[item != 0]
            reference.append(((item - inside.mean()) / inside.std()))
        for mask in ("nonzero", x != 0, lambda t: t != 0):
            y = Standardize(per_image=True, mask=mask)(x)
            np.testing.assert_allclose(y.double().numpy(), np.stack(reference), rtol=1e-5, atol=1e-5)

    def test_percentile_per_image_matches_numpy(self):
        x = make_input(torch.float32, (2, 2, 13, 7))
        y = PercentileScale(percentiles=(5, 95), per_image=True, clip=False)(x).double().numpy()
        for b in range(2):
            for c in range(2):
                values = x[b, c].double().numpy()
                lo, hi = np.percentile(values, [5, 95])
                np.testing.assert_allclose(y[b, c], (values - lo) / (hi - lo), rtol=1e-5, atol=1e-5)

    def test_constant_image_policy(self):
        x = torch.full((2, 1, 4, 4), 7, dtype=torch.uint8)
        assert torch.equal(Standardize(per_image=True)(x), torch.zeros(2, 1, 4, 4))
        assert torch.equal(MinMaxScale(per_image=True, out_range=(-1, 1))(x), torch.full((2, 1, 4, 4), -1.0))

    def test_nan_policy(self):
        x = torch.tensor([[[1.0, 2.0, float("nan"), 3.0]]])
        y = Standardize(per_image=True)(x)
        assert torch.isnan(y[0, 0, 2]) and not torch.isnan(y[0, 0, [0, 1, 3]]).any()
        finite = np.array([1.0, 2.0, 3.0])
        np.testing.assert_allclose(y[0, 0, [0, 1, 3]].numpy(), (finite - finite.mean()) / finite.std(), rtol=1e-6)
        assert torch.isnan(Standardize([0.0], [1.0])(x)[0, 0, 2])

    def test_per_image_has_no_inverse(self):
        with pytest.raises(ValueError, match="no inverse"):
            Standardize(per_image=True).inverse()


class TestDegenerate:
    def test_zero_std_names_channel_and_file(self, tmp_path):
        x = torch.stack([torch.full((8, 8), 5, dtype=torch.uint8), torch.arange(64, dtype=torch.uint8).reshape(8, 8)])
        imagenorm.compute_stats(x[None]).save(tmp_path / "flat.json")
        stats = imagenorm.DatasetStats.load(tmp_path / "flat.json")
        with pytest.raises(DegenerateStatisticsError, match=r"channel channel0 of .*flat\.json has std 0: every pixel has the same value; pass eps="):
            Standardize.from_stats(stats)
        with pytest.raises(DegenerateStatisticsError, match=r"channel channel0 of .*flat\.json has range \(max - min\) 0"):
            MinMaxScale.from_stats(stats)
        t = Standardize.from_stats(stats, eps=1.0)
        assert torch.isfinite(t(x)).all()

    def test_given_parameters(self):
        with pytest.raises(DegenerateStatisticsError, match="std 0"):
            Standardize([1.0], [0.0])
        with pytest.raises(DegenerateStatisticsError, match="non-finite std"):
            Standardize([1.0], [float("nan")])
        with pytest.raises(DegenerateStatisticsError, match="range"):
            MinMaxScale([3.0], [3.0])


class TestModuleBehaviour:
    def test_input_not_mutated_and_out_and_inplace(self):
        x = make_input(torch.float32, (2, 3, 5, 5))
        before = x.clone()
        t = Standardize([0.5, 0.5, 0.5], [0.2, 0.2, 0.2])
        y = t(x)
        assert torch.equal(x, before)
        buffer = torch.empty_like(x)
        assert t(x, out=buffer) is buffer and torch.equal(buffer, y)
        t_inplace = Standardize([0.5, 0.5, 0.5], [0.2, 0.2, 0.2], inplace=True)
        assert t_inplace(x) is x and torch.equal(x, y)

    def test_out_must_fit(self):
        with pytest.raises(ValueError, match="out must have shape"):
            Standardize([0.0], [1.0])(torch.zeros(1, 4, 4), out=torch.empty(1, 4, 5))

    @pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.bfloat16])
    def test_output_dtype(self, dtype):
        x = make_input(torch.uint8, (3, 4, 4))
        y = Standardize([0.5] * 3, [0.25] * 3, dtype=dtype)(x)
        assert y.dtype == dtype
        expected = (x.double() / 255 - 0.5) / 0.25
        torch.testing.assert_close(y.double(), expected, rtol=1e-2 if dtype != torch.float64 else 1e-12, atol=1e-2 if dtype != torch.float64 else 1e-12)

    def test_channels_last_kept(self):
        x = make_input(torch.uint8, (2, 3, 6, 7)).contiguous(memory_format=torch.channels_last)
        t = Standardize([10.0, 20.0, 30.0], [5.0, 6.0, 7.0], value_scale=255.0)
        y = t(x)
        assert y.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y, t(x.contiguous()))

    def test_strided_input(self):
        x = make_input(torch.uint16, (2, 3, 8, 8))[:, :, ::2, 1::3]
        t = Standardize([10.0, 20.0, 30.0], [5.0, 6.0, 7.0], value_scale=65535.0)
        torch.testing.assert_close(t(x), t(x.contiguous()))

    def test_buffers_state_dict_pickle_and_device(self):
        stats = imagenorm.compute_stats([make_input(torch.uint8, (3, 4, 4))])
        t = Standardize.from_stats(stats)
        assert set(t.state_dict()) == {"mean", "std", "_extra_state"}  # the units travel as extra state
        clone = pickle.loads(pickle.dumps(t))
        x = make_input(torch.uint8, (3, 4, 4))
        assert torch.equal(clone(x), t(x))
        moved = t.to("cpu")
        assert moved.mean.device.type == "cpu"

    def test_tensor_subclass_kept(self):
        class Image(torch.Tensor):  # like torchvision's tv_tensors.Image
            pass

        x = make_input(torch.uint8, (3, 4, 4)).as_subclass(Image)
        y = Standardize([0.5] * 3, [0.25] * 3)(x)
        assert type(y) is Image

    def test_autograd_flows(self):
        x = torch.rand(1, 3, 3, requires_grad=True)
        Standardize([0.5], [0.25])(x).sum().backward()
        assert torch.allclose(x.grad, torch.full_like(x, 4.0))

    def test_torch_compile(self):
        t = MinMaxScale([0.0, 0.0, 0.0], [255.0, 200.0, 100.0], value_scale=255.0, clip=True)
        x = make_input(torch.uint8, (2, 3, 8, 8))
        compiled = torch.compile(t, backend="aot_eager")
        torch.testing.assert_close(compiled(x), t(x))

    def test_in_a_dataloader_with_workers(self):
        images = [make_input(torch.uint8, (3, 8, 8), seed) for seed in range(6)]
        t = Standardize.from_stats(imagenorm.compute_stats(images))

        class Normalized(torch.utils.data.Dataset):
            def __len__(self):
                return len(images)

            def __getitem__(self, index):
                return t(images[index])

        batches = list(torch.utils.data.DataLoader(Normalized(), batch_size=3, num_workers=2))
        torch.testing.assert_close(torch.cat(batches), t(torch.stack(images)))


class TestPaths:
    """The compiled CPU kernel and the torch-operations path (GPU, autograd, compile) agree."""

    @pytest.mark.parametrize("dtype", INPUT_DTYPES)
    @pytest.mark.parametrize("layout", ["contiguous", "channels_last", "unbatched"])
    @pytest.mark.parametrize("clip", [False, True])
    def test_kernel_equals_torch_path(self, monkeypatch, dtype, layout, clip):
        x = make_input(dtype, (3, 3, 7, 9) if layout != "unbatched" else (3, 7, 9))
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        t = MinMaxScale([0.1, 0.2, 0.3], [0.6, 0.7, 0.8], out_range=(-1, 1), clip=clip)
        fast = t(x)
        monkeypatch.setattr(F, "_fused_path", lambda *args: False)
        slow = t(x)
        torch.testing.assert_close(fast, slow, **tolerance(dtype))
        if layout == "channels_last":
            assert fast.is_contiguous(memory_format=torch.channels_last) and slow.is_contiguous(memory_format=torch.channels_last)

    def test_per_image_kernel_equals_torch_path(self, monkeypatch):
        x = make_input(torch.uint16, (4, 2, 9, 9))
        fast = Standardize(per_image=True)(x)
        monkeypatch.setattr(F, "_fused_path", lambda *args: False)
        torch.testing.assert_close(fast, Standardize(per_image=True)(x))


class TestInverse:
    @pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16, torch.float32])
    def test_round_trip(self, dtype):
        images = [make_input(dtype, (3, 6, 6), seed) for seed in range(3)]
        stats = imagenorm.compute_stats(images)
        x = torch.stack(images)
        for t in (Standardize.from_stats(stats), MinMaxScale.from_stats(stats, out_range=(-1, 1))):
            back = t.inverse(scaled=dtype.is_floating_point)(t(x))
            torch.testing.assert_close(back.double(), x.double(), rtol=1e-5, atol=1e-3 if not dtype.is_floating_point else 1e-6)

    @given(st.floats(-1e3, 1e3), st.floats(1e-2, 1e3), st.lists(st.integers(0, 65535), min_size=1, max_size=20))
    @settings(max_examples=60, deadline=None)
    def test_property_inverse_undoes_forward(self, mean, std, values):
        x = torch.tensor(values, dtype=torch.int32).reshape(1, 1, -1)
        t = Standardize([mean], [std], value_scale=float(2**31 - 1))
        back = t.inverse()(t(x)).double()
        raw = x.double() * (2**31 - 1) / torch.iinfo(torch.int32).max
        # float32 output: a few roundings of 2**-24 relative to |mean| + |x| (raw units)
        bound = 3e-7 * (abs(mean) + float(raw.abs().max()) + std)
        torch.testing.assert_close(back, raw, rtol=0, atol=bound)

    @given(st.floats(-100, 100), st.floats(0.1, 100), st.sampled_from([(0.0, 1.0), (-1.0, 1.0), (1.0, -1.0)]))
    @settings(max_examples=40, deadline=None)
    def test_property_min_max_lands_in_range(self, low, width, out_range):
        x = torch.linspace(low, low + width, 50, dtype=torch.float64).reshape(1, 1, 50)
        y = MinMaxScale([low], [low + width], out_range=out_range, dtype=torch.float64)(x)
        assert float(y.min()) == pytest.approx(min(out_range), abs=1e-9)
        assert float(y.max()) == pytest.approx(max(out_range), abs=1e-9)


def test_real_image_standardized_has_mean_0_std_1():
    image = torch.from_numpy(np.array(Image.open(SKIMAGE_DATA / "astronaut.png"))).permute(2, 0, 1)
    stats = imagenorm.compute_stats(image)
    y = Standardize.from_stats(stats)(image).double().reshape(3, -1)
    np.testing.assert_allclose(y.mean(1).numpy(), 0, atol=1e-6)
    np.testing.assert_allclose(y.std(1, correction=0).numpy(), 1, atol=1e-6)


def test_large_offset_keeps_precision():
    """16-bit data far from zero with a tiny spread: float32 x * s + b would cancel digits."""
    x = torch.full((1, 6, 6), 60000, dtype=torch.int32)
    x[0, ::2] += 1
    x = x.to(torch.uint16)
    y = Standardize.from_stats(imagenorm.compute_stats(x))(x)
    assert sorted(y.unique().tolist()) == [-1.0, 1.0]
