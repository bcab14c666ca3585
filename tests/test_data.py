"""Tests for nncompress.data: strict IDX reading and seeded, standardised splits."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from nncompress.data import FASHION_MNIST_DIR, Splits, load_data, read_idx
from nncompress.data.datasets import FASHION_MNIST_ENV, IDX_FILES
from nncompress.errors import DataError

TYPE_CODES = {
    np.dtype("u1"): 0x08,
    np.dtype("i1"): 0x09,
    np.dtype("i2"): 0x0B,
    np.dtype("i4"): 0x0C,
    np.dtype("f4"): 0x0D,
    np.dtype("f8"): 0x0E,
}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode an array as an IDX file: zero bytes, type code, rank, big-endian dims, big-endian payload."""
    code = TYPE_CODES[arr.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, *, gz: bool | None = None) -> Path:
    data = idx_bytes(arr)
    if gz if gz is not None else path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_folder(
    folder: Path,
    *,
    n_train: int = 300,
    n_test: int = 50,
    classes: int = 10,
    hw: tuple[int, int] = (6, 5),
    gz: bool = False,
    seed: int = 1,
) -> Path:
    """Write the four standard IDX files with random uint8 images and labels covering all classes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    tr_y = (np.arange(n_train) % classes).astype(np.uint8)
    te_y = (np.arange(n_test) % classes).astype(np.uint8)
    write_idx(folder / (IDX_FILES[0] + suffix), rng.integers(0, 256, (n_train, *hw), dtype=np.uint8))
    write_idx(folder / (IDX_FILES[1] + suffix), tr_y)
    write_idx(folder / (IDX_FILES[2] + suffix), rng.integers(0, 256, (n_test, *hw), dtype=np.uint8))
    write_idx(folder / (IDX_FILES[3] + suffix), te_y)
    return folder


# ---------------------------------------------------------------- read_idx


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_read_idx_round_trip_plain_and_gzip(tmp_path: Path, name: str) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / name, arr))
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 99  # returned array must be writable (not a view of immutable bytes)


def test_read_idx_detects_gzip_by_magic_without_suffix(tmp_path: Path) -> None:
    arr = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    out = read_idx(write_idx(tmp_path / "labels", arr, gz=True))
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("dtype", ["i1", "i2", "i4", "f4", "f8"])
def test_read_idx_other_type_codes_are_big_endian(tmp_path: Path, dtype: str) -> None:
    arr = np.array([[-3, 2], [7, -100]], dtype=dtype)
    out = read_idx(write_idx(tmp_path / "x.idx", arr))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_read_idx_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 2) + b"\x00\x01")
    with pytest.raises(DataError) as exc:
        read_idx(path)
    msg = str(exc.value)
    assert str(path) in msg and "wrong magic 0x12340801" in msg and "0x0803 or 0x0801" in msg


def test_read_idx_unsupported_type_and_rank(tmp_path: Path) -> None:
    path = tmp_path / "t.idx"
    path.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(DataError, match="unsupported IDX type code 0x07"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x08\x05" + b"\x00" * 20)
    with pytest.raises(DataError, match="number of dimensions 5"):
        read_idx(path)


def test_read_idx_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "h.idx"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">I", 10))  # only 1 of 3 dims
    with pytest.raises(DataError, match="truncated header"):
        read_idx(path)


def test_read_idx_truncated_payload(tmp_path: Path) -> None:
    path = tmp_path / "short.idx"
    path.write_bytes(idx_bytes(np.zeros((4, 3, 3), np.uint8))[:-5])
    with pytest.raises(DataError) as exc:
        read_idx(path)
    msg = str(exc.value)
    assert str(path) in msg and "truncated" in msg and "31" in msg and "36" in msg


def test_read_idx_trailing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "long.idx.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(10, np.uint8)) + b"\x00\x00\x00"))
    with pytest.raises(DataError) as exc:
        read_idx(path)
    assert str(path) in str(exc.value) and "trailing bytes: 3" in str(exc.value)


def test_read_idx_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "cut.idx.gz"
    full = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8).reshape(10, 20)))
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError) as exc:
        read_idx(path)
    assert str(path) in str(exc.value) and "gzip" in str(exc.value)


def test_read_idx_gz_suffix_but_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "fake.gz"
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DataError, match="gzip"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.idx"):
        read_idx(tmp_path / "nope.idx")


def _gzip_bomb(path: Path, header: bytes, zeros: int) -> Path:
    """A gzip stream of ``header`` then ``zeros`` zero bytes, written in chunks (never held whole)."""
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(header)
        chunk = bytes(1 << 20)
        for _ in range(zeros >> 20):
            out.write(chunk)
    return path


def test_a_gzip_bomb_is_refused_after_the_payload_the_header_declares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nncompress.data.idx as idx_mod

    path = _gzip_bomb(tmp_path / "bomb-labels.gz", idx_bytes(np.zeros(10, np.uint8)), 64 << 20)
    assert path.stat().st_size < 200_000  # 64 MiB of zeros
    seen = []
    real = gzip.GzipFile.read

    def counting(self: gzip.GzipFile, size: int = -1) -> bytes:
        data = real(self, size)
        seen.append(len(data))
        return data

    monkeypatch.setattr(gzip.GzipFile, "read", counting)
    with pytest.raises(
        DataError,
        match=r"bomb-labels\.gz: trailing bytes: more than 1,048,576 bytes after the "
        r"10-byte payload",
    ):
        read_idx(path)
    assert sum(seen) <= idx_mod.TRAILING_WINDOW + 100  # the 64 MiB were never decompressed


def test_a_header_claiming_more_than_gzip_can_hold_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">3I", 60000, 10000, 10000)))
    with pytest.raises(DataError, match=r"need 6,000,000,000,000 bytes, more than a \d+-byte gzip stream can hold"):
        read_idx(path)


def test_a_plain_file_is_checked_against_its_header_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 60000, 10000, 10000) + b"\x00" * 10)
    with pytest.raises(DataError, match="truncated: payload is 10 bytes but dims"):
        read_idx(path)


def test_a_fifo_or_device_is_refused_unread(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "pipe.idx")
    with pytest.raises(DataError, match="is a FIFO"):
        read_idx(tmp_path / "pipe.idx")
    with pytest.raises(DataError, match="is a character device"):
        read_idx("/dev/zero")
    folder = make_folder(tmp_path / "data")
    target = folder / IDX_FILES[0]
    if not target.exists():
        target = folder / f"{IDX_FILES[0]}.gz"
    target.unlink()
    os.mkfifo(folder / IDX_FILES[0])
    with pytest.raises(DataError, match="is a FIFO"):
        load_data(str(folder))


# ---------------------------------------------------------------- load_data: IDX folders


def test_folder_small_synthetic_gives_10pct_val(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "ds", n_train=300, n_test=50, hw=(6, 5))
    s = load_data(str(folder))
    assert isinstance(s, Splits)
    assert s.sizes() == {"train": 270, "val": 30, "test": 50}
    assert s.input_shape == (1, 6, 5) and s.num_classes == 10
    assert s.train_x.shape == (270, 1, 6, 5) and s.train_x.dtype == torch.float32
    assert s.test_x.shape == (50, 1, 6, 5)
    assert s.train_y.dtype == torch.int64 and s.val_y.dtype == torch.int64
    # Train-split standardisation: mean 0, std 1 on train pixels only.
    assert abs(s.train_x.mean().item()) < 1e-5
    assert abs(s.train_x.std(unbiased=False).item() - 1.0) < 1e-4


def _to_pixels(x: torch.Tensor, lo: float, hi: float, max_value: int) -> np.ndarray:
    """Undo the affine standardisation given the standardised values of pixel 0 and max_value."""
    flat = x.reshape(len(x), -1).double().numpy()
    return np.rint((flat - lo) / (hi - lo) * max_value).astype(np.int64)


def test_folder_split_is_seeded_and_partitions_train(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "ds", n_train=300, n_test=20)
    raw = read_idx(folder / IDX_FILES[0]).reshape(300, -1).astype(np.int64)
    a, b = load_data(str(folder), split_seed=3), load_data(str(folder), split_seed=3)
    c = load_data(str(folder), split_seed=4)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.val_x, c.val_x)
    # Pixels 0 and 255 both occur in 9,000 random train pixels, so min/max pin down the affine map.
    lo, hi = a.train_x.min().item(), a.train_x.max().item()
    index = {row.tobytes(): i for i, row in enumerate(raw)}
    train_rows = [index[r.tobytes()] for r in _to_pixels(a.train_x, lo, hi, 255)]
    val_rows = [index[r.tobytes()] for r in _to_pixels(a.val_x, lo, hi, 255)]
    assert len(val_rows) == 30 and sorted(train_rows + val_rows) == list(range(300))
    # Labels travel with their images.
    labels = read_idx(folder / IDX_FILES[1])
    assert a.val_y.tolist() == labels[val_rows].tolist()
    # Test images are kept in file order.
    test_raw = read_idx(folder / IDX_FILES[2]).reshape(20, -1)
    np.testing.assert_array_equal(_to_pixels(a.test_x, lo, hi, 255), test_raw)


def test_folder_with_gz_files_and_plain_preferred(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "gz", n_train=40, n_test=10, gz=True)
    s = load_data(str(folder))
    assert s.sizes() == {"train": 36, "val": 4, "test": 10}
    # A plain twin wins over .gz: make the plain test labels differ and see them used.
    write_idx(folder / IDX_FILES[3], np.zeros(10, np.uint8))
    assert load_data(str(folder)).test_y.tolist() == [0] * 10
    assert s.test_y.tolist() == [i % 10 for i in range(10)]


def test_large_train_set_holds_out_5000(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "big", n_train=25000, n_test=10, hw=(1, 1))
    assert load_data(str(folder)).sizes() == {"train": 20000, "val": 5000, "test": 10}


def test_count_mismatch_names_both_counts_and_files(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "ds", n_train=30, n_test=10)
    write_idx(folder / IDX_FILES[1], (np.arange(29) % 10).astype(np.uint8))
    with pytest.raises(DataError) as exc:
        load_data(str(folder))
    msg = str(exc.value)
    assert "30 images" in msg and "29 labels" in msg
    assert IDX_FILES[0] in msg and IDX_FILES[1] in msg


def test_images_must_be_3d_uint8(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "ds", n_train=30, n_test=10)
    write_idx(folder / IDX_FILES[2], np.zeros((10, 30), np.uint8))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.*3-D uint8"):
        load_data(str(folder))
    write_idx(folder / IDX_FILES[2], np.zeros((10, 6, 5), np.int16))
    with pytest.raises(DataError, match="int16"):
        load_data(str(folder))


def test_test_label_outside_train_classes(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "ds", n_train=30, n_test=10, classes=5)
    write_idx(folder / IDX_FILES[3], np.full(10, 7, np.uint8))
    with pytest.raises(DataError) as exc:
        load_data(str(folder))
    assert "test label 7" in str(exc.value) and "0..4" in str(exc.value)


def test_labels_must_fit_in_a_byte(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "ds", n_train=30, n_test=10)
    write_idx(folder / IDX_FILES[1], np.full(30, 300, np.int32))
    with pytest.raises(DataError, match=r"0\.\.255.*300"):
        load_data(str(folder))


def test_missing_one_file_is_named(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "ds", n_train=30, n_test=10)
    (folder / IDX_FILES[3]).unlink()
    with pytest.raises(DataError) as exc:
        load_data(str(folder))
    assert "t10k-labels-idx1-ubyte" in str(exc.value) and str(folder) in str(exc.value)


def test_corrupt_file_in_folder_surfaces_path(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "ds", n_train=30, n_test=10, gz=True)
    bad = folder / (IDX_FILES[0] + ".gz")
    bad.write_bytes(bad.read_bytes()[:20])
    with pytest.raises(DataError, match=IDX_FILES[0]):
        load_data(str(folder))


# ---------------------------------------------------------------- load_data: fashion-mnist spec


def test_fashion_mnist_missing_folder_tells_how_to_install(tmp_path: Path, monkeypatch) -> None:
    missing = tmp_path / "no-such-dir"
    monkeypatch.setenv(FASHION_MNIST_ENV, str(missing))
    with pytest.raises(DataError) as exc:
        load_data("fashion-mnist")
    msg = str(exc.value)
    assert str(missing) in msg
    assert "apt-get install -y dataset-fashion-mnist" in msg and "--data PATH" in msg


def test_fashion_mnist_missing_file_names_it_with_hint(tmp_path: Path, monkeypatch) -> None:
    folder = make_folder(tmp_path / "fm", n_train=30, n_test=10, gz=True)
    (folder / (IDX_FILES[0] + ".gz")).unlink()
    monkeypatch.setenv(FASHION_MNIST_ENV, str(folder))
    with pytest.raises(DataError) as exc:
        load_data("fashion-mnist")
    assert "train-images-idx3-ubyte" in str(exc.value) and "dataset-fashion-mnist" in str(exc.value)


def test_fashion_mnist_env_override_loads(tmp_path: Path, monkeypatch) -> None:
    folder = make_folder(tmp_path / "fm", n_train=50, n_test=10)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(folder))
    s = load_data("fashion-mnist")
    assert s.name == "fashion-mnist" and s.sizes() == {"train": 45, "val": 5, "test": 10}


@pytest.mark.skipif(
    not all((FASHION_MNIST_DIR / f"{n}.gz").is_file() or (FASHION_MNIST_DIR / n).is_file() for n in IDX_FILES),
    reason=f"Fashion-MNIST not installed at {FASHION_MNIST_DIR}",
)
def test_real_fashion_mnist(monkeypatch) -> None:
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    s = load_data("fashion-mnist")
    assert s.sizes() == {"train": 55000, "val": 5000, "test": 10000}
    assert s.input_shape == (1, 28, 28) and s.num_classes == 10
    assert abs(s.train_x.mean().item()) < 1e-3


# ---------------------------------------------------------------- load_data: digits and errors


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_data("digits", split_seed=0)


def test_digits_sizes_and_shapes(digits: Splits) -> None:
    sizes = digits.sizes()
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == int(1797 * 0.2)
    assert sizes["val"] == int((1797 - sizes["test"]) * 0.1)
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert digits.train_x.shape == (sizes["train"], 1, 8, 8) and digits.train_x.dtype == torch.float32
    assert digits.test_y.dtype == torch.int64


def test_digits_splits_are_disjoint(digits: Splits) -> None:
    from sklearn.datasets import load_digits

    raw = load_digits().images.reshape(1797, -1).astype(np.int64)
    # Pixels 0 and 16 both occur in train, so its min/max pin down the affine standardisation.
    lo, hi = digits.train_x.min().item(), digits.train_x.max().item()
    parts = [_to_pixels(getattr(digits, f"{k}_x"), lo, hi, 16) for k in ("train", "val", "test")]
    # Some digit images repeat, so compare the split union with the data set as multisets of rows.
    together = sorted(r.tobytes() for p in parts for r in p)
    assert together == sorted(r.tobytes() for r in raw)
    assert len(together) == 1797


def test_digits_deterministic_per_seed(digits: Splits) -> None:
    again = load_data("digits", split_seed=0)
    other = load_data("digits", split_seed=1)
    assert torch.equal(again.test_x, digits.test_x) and torch.equal(again.train_y, digits.train_y)
    assert not torch.equal(other.test_y, digits.test_y)


def test_digits_standardised_on_train(digits: Splits) -> None:
    assert abs(digits.train_x.mean().item()) < 1e-5
    assert abs(digits.train_x.std(unbiased=False).item() - 1.0) < 1e-4
    # Val/test use train statistics, so they are only approximately standardised.
    assert abs(digits.test_x.mean().item()) < 0.2


def test_unknown_spec_lists_accepted_values(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_data(str(tmp_path / "nothing-here"))
    msg = str(exc.value)
    assert "'fashion-mnist'" in msg and "'digits'" in msg and "folder" in msg
    with pytest.raises(DataError, match="mnist-digits"):
        load_data("mnist-digits")
