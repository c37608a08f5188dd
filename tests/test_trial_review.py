"""Re-checks of refactored behaviours against independent references (numpy over cv2-decoded pixels)."""
import io
import os
import tarfile

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from imagenorm import ShardStreamDataset, compute_stats  # noqa: E402


def _png16(a):
    return cv2.imencode(".png", a)[1].tobytes()


def test_parquet_cell_png_bytes_named_jpg_read_by_signature(tmp_path):
    a = np.random.default_rng(0).integers(0, 65535, (8, 9), dtype=np.uint16)
    pq.write_table(pa.table({"image": [{"bytes": _png16(a), "path": "x.jpg"}]}), tmp_path / "a.parquet")
    s = compute_stats(str(tmp_path / "a.parquet"))
    ref = a.astype(np.float64)
    assert s.dtype == "uint16"
    assert s.mean[0] == pytest.approx(ref.mean(), rel=1e-12)
    assert s.std[0] == pytest.approx(ref.std(), rel=1e-12)


def test_same_tar_named_twice_read_once_and_member_bit_exact(tmp_path):
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 65535, (4, 5), dtype=np.uint16) for _ in range(2)]
    segs = [rng.integers(0, 65535, (4, 5), dtype=np.uint16) for _ in range(2)]
    with tarfile.open(tmp_path / "a.tar", "w") as tf:
        for i in range(2):
            for name, arr in ((f"s{i}.img.png", imgs[i]), (f"s{i}.seg.png", segs[i])):
                b = _png16(arr)
                ti = tarfile.TarInfo(name)
                ti.size = len(b)
                tf.addfile(ti, io.BytesIO(b))
    os.symlink(tmp_path / "a.tar", tmp_path / "link.tar")
    os.link(tmp_path / "a.tar", tmp_path / "hard.tar")
    shards = [str(tmp_path / "a.tar"), str(tmp_path / "link.tar"), str(tmp_path / "hard.tar")]
    s = compute_stats(shards, member="img.png")
    ref = np.concatenate([x.ravel() for x in imgs]).astype(np.float64)
    assert s.files == 2
    assert s.mean[0] == pytest.approx(ref.mean(), rel=1e-12)
    assert s.std[0] == pytest.approx(ref.std(), rel=1e-12)
    out = list(ShardStreamDataset(shards, member="seg.png"))
    assert len(out) == 2
    for got, want in zip(out, segs):
        assert np.array_equal(got.numpy().squeeze().astype(np.int64), want.astype(np.int64))
