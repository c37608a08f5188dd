"""Statistics state: exactness against float64 numpy, and merge laws."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from imagenorm.stats import kernels
from imagenorm.stats.float_percentiles import BracketValues, FloatHistogram
from imagenorm.stats.histogram import IntegerHistogram
from imagenorm.stats.moments import FloatMoments
from imagenorm.stats.summary import PERCENTILES, percentile_key, percentiles_from_counts as linear_percentiles_from_counts

from conftest import random_image, reference

INTEGER_DTYPES = ["uint8", "int8", "uint16", "int16"]


def histogram_of(pixels: np.ndarray) -> IntegerHistogram:
    state = IntegerHistogram.empty(pixels.dtype.name, pixels.shape[0])
    state.update(pixels)
    return state


class TestPercentiles:
    @pytest.mark.parametrize("size", [1, 2, 3, 7, 100, 1001])
    def test_equal_numpy_linear_exactly(self, rng, size):
        data = rng.integers(-50, 50, size)
        values, counts = np.unique(data, return_counts=True)
        got = linear_percentiles_from_counts(values, counts)
        want = {percentile_key(q): float(np.percentile(data, q)) for q in PERCENTILES}
        assert got == want

    @given(hnp.arrays(np.int16, st.integers(1, 300), elements=st.integers(-1000, 1000)))
    @settings(max_examples=60, deadline=None)
    def test_property_equal_numpy(self, data):
        values, counts = np.unique(data, return_counts=True)
        qs = (0.5, 13.7, 50.0, 99.5, 100.0, 0.0)
        got = linear_percentiles_from_counts(values, counts, qs)
        assert got == {percentile_key(q): float(np.percentile(data, q)) for q in qs}


class TestIntegerHistogram:
    @pytest.mark.parametrize("dtype", INTEGER_DTYPES)
    @pytest.mark.parametrize("channels", [1, 3, 4])
    def test_matches_float64_reference(self, rng, dtype, channels):
        pixels = random_image(rng, dtype, (channels, 37, 53))
        state = histogram_of(pixels)
        ref = reference([pixels])
        for channel in range(channels):
            got, want = state.summary(channel), ref["channels"][channel]
            assert got.count == want["count"]
            assert got.mean == pytest.approx(want["mean"], rel=1e-12)
            assert got.std == pytest.approx(want["std"], rel=1e-12)
            assert (got.min, got.max) == (want["min"], want["max"])
            assert got.percentiles == want["percentiles"]
        assert state.summary(None).percentiles == ref["pooled"]["percentiles"]

    def test_exact_where_float32_sums_of_squares_fail(self):
        # 16-bit data with a large mean and small spread: E[x^2] - E[x]^2 in float32 is garbage.
        pixels = np.full((1, 1000, 1000), 60000, np.uint16)
        pixels[0, ::2] += 1
        state = histogram_of(pixels)
        assert state.summary(0).std == 0.5
        assert state.summary(0).mean == 60000.5
        x = pixels.astype(np.float32)
        naive = float(np.sqrt(np.abs((x * x).mean() - x.mean() ** 2)))
        assert abs(naive - 0.5) > 0.1  # the recipe we replace is far off

    @pytest.mark.parametrize("layout", ["channel_last", "channel_first", "strided"])
    def test_kernel_reads_every_layout(self, rng, layout):
        hwc = rng.integers(0, 256, (31, 17, 3), dtype=np.uint8)
        if layout == "channel_last":
            pixels = np.moveaxis(hwc, -1, 0)
        elif layout == "channel_first":
            pixels = np.ascontiguousarray(np.moveaxis(hwc, -1, 0))
        else:
            pixels = np.moveaxis(hwc, -1, 0)[:, ::2, ::3]
        banks = np.zeros((kernels.BANKS, 3, 256), np.int64)
        kernels.count_values(pixels, banks)
        for channel in range(3):
            expected = np.bincount(pixels[channel].ravel(), minlength=256)
            np.testing.assert_array_equal(banks.sum(axis=0)[channel], expected)

    @given(
        hnp.arrays(np.uint16, st.tuples(st.just(2), st.integers(1, 40)), elements=st.integers(0, 65535)),
        st.lists(st.integers(0, 40), max_size=4),
    )
    @settings(max_examples=50, deadline=None)
    def test_merging_any_split_equals_whole(self, pixels, cuts):
        cuts = sorted({min(c, pixels.shape[1]) for c in cuts})
        parts = np.split(pixels, cuts, axis=1)
        merged = IntegerHistogram.empty("uint16", 2)
        for part in reversed(parts):  # order does not matter
            merged = merged.merge(histogram_of(part[:, None, :]))
        whole = histogram_of(pixels[:, None, :])
        np.testing.assert_array_equal(merged.counts, whole.counts)
        assert merged.summary(None) == whole.summary(None)


class TestFloatMoments:
    def test_matches_float64_reference(self, rng):
        pixels = random_image(rng, "float32", (3, 40, 50))
        state = FloatMoments.empty(3)
        state.update(pixels)
        ref = reference([pixels])
        for channel in range(3):
            assert state.mean[channel] == pytest.approx(ref["channels"][channel]["mean"], rel=1e-12)
            assert np.sqrt(state.m2[channel] / state.count[channel]) == pytest.approx(ref["channels"][channel]["std"], rel=1e-12)

    @given(
        hnp.arrays(np.float64, st.integers(2, 200), elements=st.floats(-1e6, 1e6)),
        st.lists(st.integers(1, 199), max_size=5),
    )
    @settings(max_examples=60, deadline=None)
    def test_chan_merge_of_any_split_equals_whole(self, data, cuts):
        parts = [p for p in np.split(data, sorted(set(c for c in cuts if c < data.size))) if p.size]
        merged = FloatMoments.empty(1)
        for part in parts:
            piece = FloatMoments.empty(1)
            piece.update(part[None])
            merged = merged.merge(piece)
        assert merged.count[0] == data.size
        assert merged.mean[0] == pytest.approx(data.mean(), rel=1e-9, abs=1e-6)
        assert np.sqrt(merged.m2[0] / data.size) == pytest.approx(data.std(), rel=1e-9, abs=1e-6)
        assert (merged.minimum[0], merged.maximum[0]) == (data.min(), data.max())

    def test_nonfinite_counted_and_left_out(self):
        pixels = np.array([[1.0, np.nan, 3.0, np.inf, -np.inf]])
        state = FloatMoments.empty(1)
        state.update(pixels)
        assert state.count[0] == 2 and state.nonfinite[0] == 3 and state.mean[0] == 2.0

    def test_percentile_histogram_within_its_bound(self, rng):
        pixels = rng.lognormal(0, 1, (2, 20000))
        moments = FloatMoments.empty(2)
        moments.update(pixels)
        histogram = FloatHistogram.for_moments(moments)
        histogram.update(pixels)
        for row, values in enumerate([pixels[0], pixels[1], pixels.ravel()]):
            got = histogram.percentiles(row)
            for q in PERCENTILES:
                assert abs(got[percentile_key(q)] - np.percentile(values, q)) <= histogram.bin_width(row)


class TestWideIntegers:
    def test_int32_ranged_histogram_is_exact_and_merges(self, rng):
        parts = [rng.integers(-3024, 3071, (1, 20, 30)).astype(np.int32) for _ in range(3)]
        parts[1] += 5000  # another range: the bins grow
        merged = IntegerHistogram.empty("int32", 1)
        for part in parts:
            piece = IntegerHistogram.empty("int32", 1)
            piece.update(part)
            merged = merged.merge(piece)
        ref = reference(parts)["channels"][0]
        got = merged.summary(0)
        assert (got.min, got.max, got.count) == (ref["min"], ref["max"], ref["count"])
        assert got.mean == pytest.approx(ref["mean"], rel=1e-12) and got.std == pytest.approx(ref["std"], rel=1e-12)
        assert got.percentiles == ref["percentiles"]

    def test_too_wide_values_continue_as_moments(self, tmp_path, rng):
        import imagenorm

        images = [rng.integers(-(2**30), 2**30, (1, 10, 10)).astype(np.int32) for _ in range(3)]
        for index, image in enumerate(images):
            np.save(tmp_path / f"{index}.npy", image)
        stats = imagenorm.compute_stats(tmp_path, workers=2)
        assert not stats.exact
        values = np.concatenate([i.ravel() for i in images]).astype(np.float64)
        assert stats.pooled.mean == pytest.approx(values.mean(), rel=1e-12)
        assert stats.pooled.std == pytest.approx(values.std(), rel=1e-12)
        assert (stats.pooled.min, stats.pooled.max) == (values.min(), values.max())
        stats.save(tmp_path / "s.json")
        loaded = imagenorm.DatasetStats.load(tmp_path / "s.json")
        assert loaded.pooled.mean == stats.pooled.mean and not loaded.exact


@pytest.mark.parametrize("dtype", [">u2", ">i2", "<i2"])
def test_big_endian_counts_like_native(dtype, rng):
    pixels = rng.integers(-1000, 1000, (1, 9, 9)).astype(np.int16).astype(dtype)
    native = pixels.astype(pixels.dtype.newbyteorder("="))
    a, b = IntegerHistogram.empty(native.dtype.name, 1), IntegerHistogram.empty(native.dtype.name, 1)
    a.update(pixels)
    b.update(native)
    np.testing.assert_array_equal(a.counts, b.counts)


@given(
    hnp.arrays(np.float64, st.integers(2, 300), elements=st.floats(-1e3, 1e3).map(lambda v: round(v, 1))),
    st.lists(st.integers(1, 299), max_size=4),
)
@settings(max_examples=40, deadline=None)
def test_exact_float_percentiles_of_any_split(data, cuts):
    """Three passes (moments, histogram, bracketed values) over any split give numpy's percentiles."""

    parts = [p[None, None, :] for p in np.split(data, sorted(set(c for c in cuts if c < data.size))) if p.size]
    moments = FloatMoments.empty(1)
    for part in parts:
        moments.update(part)
    histogram = FloatHistogram.for_moments(moments)
    for part in parts:
        piece = FloatHistogram(histogram.low, histogram.high)
        piece.update(part)
        histogram = histogram.merge(piece)
    brackets = BracketValues.for_histogram(histogram)
    for part in reversed(parts):
        piece = brackets.empty()
        piece.update(part)
        brackets = brackets.merge(piece)
    assert brackets.percentiles(0) == {percentile_key(q): float(np.percentile(data, q)) for q in PERCENTILES}
