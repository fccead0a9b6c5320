"""Tests of gumbel_tut.idx (library note 20: IDX round trips and every kind of bad file) and gumbel_tut.data
(chapter 3: splits, binarization, batches) beyond the notebooks."""
import gzip, struct, subprocess, sys, tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from gumbel_tut.idx import (
    IDX_DTYPES, IDX_STEMS, DatasetNotFoundError, IDXFormatError, find_idx_file, read_idx, read_idx_folder,
    read_idx_images, read_idx_labels, write_idx)
from gumbel_tut.data import (
    BINARIZATIONS, DIGITS_SIZES, FASHION_MNIST_DIR, DataSplits, Split, batches, binarize_dynamic, binarize_fixed,
    derive_seed, epoch_generator, load_dataset, load_digits_splits, load_idx_splits, split_indices,
    to_unit_interval)

IDX_NAMES = ('GZIP_MAGIC', 'IDX_DTYPES', 'IDX_STEMS', 'DatasetNotFoundError', 'IDXFormatError', 'find_idx_file',
             'read_idx', 'read_idx_folder', 'read_idx_images', 'read_idx_labels', 'write_idx')

ALPHA = 1e-3  # significance level of the statistical tests


def write_bytes(path: Path, payload: bytes, gz: bool) -> Path:
    "Write `payload` to `path`, gzipped when `gz`."
    if gz:
        with gzip.open(path, 'wb') as f: f.write(payload)
    else: path.write_bytes(payload)
    return path


def idx_header(code: int, dims) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f'>{len(dims)}I', *dims)


def make_folder(folder: Path, n_train=40, n_test=12, shape=(28, 28), gz=True, dotted=False, seed=0):
    "A tiny MNIST-like folder; every image is filled with 20 * its label, so images and labels can be matched."
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for part, n in (('train', n_train), ('t10k', n_test)):
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        images = np.broadcast_to((labels * 20)[:, None, None], (n, *shape)).astype(np.uint8)
        for kind, arr in (('images-idx3', images), ('labels-idx1', labels)):
            name = f'{part}-{kind}-ubyte'
            if dotted: name = name.replace('-idx', '.idx')
            write_idx(folder / (name + ('.gz' if gz else '')), arr)
    return folder


# ---------------------------------------------------------------- IDX round trips

@pytest.mark.parametrize('gz', [False, True])
@pytest.mark.parametrize('dtype', [np.dtype(v).newbyteorder('=') for v in IDX_DTYPES.values()])
def test_idx_round_trip(tmp_path, gz, dtype):
    rng = np.random.default_rng(1)
    a = (rng.normal(size=(3, 5, 7)) * 50).astype(dtype)
    path = write_idx(tmp_path / ('a.gz' if gz else 'a'), a)
    b = read_idx(path)
    assert b.dtype == a.dtype and b.dtype.isnative and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_idx_bytes_are_the_mnist_layout(tmp_path):
    "The header is the documented magic number and big-endian sizes; data in C order."
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = write_idx(tmp_path / 'x', images).read_bytes()
    assert raw[:16] == bytes.fromhex('00000803' '00000002' '00000003' '00000004')
    assert raw[16:] == images.tobytes()
    raw = write_idx(tmp_path / 'y', np.array([7, 1], dtype=np.uint8)).read_bytes()
    assert raw == bytes.fromhex('00000801' '00000002' '0701')


def test_gzip_is_detected_by_magic_bytes_not_suffix(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    payload = idx_header(0x08, a.shape) + a.tobytes()
    np.testing.assert_array_equal(read_idx(write_bytes(tmp_path / 'gzipped-no-suffix', payload, gz=True)), a)
    np.testing.assert_array_equal(read_idx(write_bytes(tmp_path / 'plain-but-named.gz', payload, gz=False)), a)


def test_write_idx_rejects_types_without_a_code(tmp_path):
    with pytest.raises(ValueError, match='no IDX type code'): write_idx(tmp_path / 'x', np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match='1..255 dimensions'): write_idx(tmp_path / 'x', np.array(3, dtype=np.uint8))


# ---------------------------------------------------------------- bad IDX files

def test_missing_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match='no such file') as e: read_idx(tmp_path / 'nope.gz')
    assert isinstance(e.value, FileNotFoundError) and 'nope.gz' in str(e.value)


@pytest.mark.parametrize('gz', [False, True])
@pytest.mark.parametrize('magic', ['504b0304', '01000803', '00000703', '00000800', '00000f03'])
def test_wrong_magic_number(tmp_path, gz, magic):
    path = write_bytes(tmp_path / 'bad', bytes.fromhex(magic) + b'\0' * 32, gz)
    with pytest.raises(IDXFormatError, match=f'wrong magic number 0x{magic}') as e: read_idx(path)
    assert str(path) in str(e.value) and isinstance(e.value, ValueError)


@pytest.mark.parametrize('gz', [False, True])
@pytest.mark.parametrize('payload', [b'', b'\0\0', bytes.fromhex('00000803') + b'\0\0\0\1\0\0'])
def test_truncated_header(tmp_path, gz, payload):
    path = write_bytes(tmp_path / 'short', payload, gz)
    with pytest.raises(IDXFormatError, match='truncated IDX header') as e: read_idx(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize('gz', [False, True])
def test_truncated_data(tmp_path, gz):
    a = np.ones((10, 28, 28), dtype=np.uint8)
    payload = idx_header(0x08, a.shape) + a.tobytes()
    path = write_bytes(tmp_path / 'cut', payload[:-100], gz)
    with pytest.raises(IDXFormatError, match='header sizes disagree') as e: read_idx(path)
    assert 'truncated' in str(e.value) and '10 x 28 x 28' in str(e.value) and str(path) in str(e.value)


@pytest.mark.parametrize('gz', [False, True])
def test_trailing_data(tmp_path, gz):
    payload = idx_header(0x08, (2,)) + b'\1\2' + b'extra'
    with pytest.raises(IDXFormatError, match='trailing data'): read_idx(write_bytes(tmp_path / 'long', payload, gz))


@pytest.mark.parametrize('gz', [False, True])
def test_huge_declared_size_is_refused_without_allocating(tmp_path, gz):
    "A header that claims ~2^64 bytes over 1 KiB of data fails fast, with a small memory peak."
    payload = idx_header(0x08, (2**32 - 1, 2**16, 2**16)) + b'\0' * 1024
    path = write_bytes(tmp_path / 'huge', payload, gz)
    tracemalloc.start()
    try:
        with pytest.raises(IDXFormatError, match='truncated'): read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally: tracemalloc.stop()
    assert peak < 64 * 2**20, peak  # well under the 16 MiB read chunk plus gzip buffers


def test_lying_header_over_much_real_data_keeps_memory_bounded(tmp_path):
    "A small .gz whose header claims 4294967295 x 28 x 28 images over 64 MiB of zeros: refused without holding the 64 MiB."
    path = tmp_path / 'liar.gz'
    with gzip.open(path, 'wb', compresslevel=1) as f:
        f.write(idx_header(0x08, (2**32 - 1, 28, 28)))
        zeros = bytes(1 << 20)
        for _ in range(64): f.write(zeros)
    tracemalloc.start()
    try:
        with pytest.raises(IDXFormatError, match='truncated') as e: read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally: tracemalloc.stop()
    assert str(path) in str(e.value)
    assert peak < 40 * 2**20, peak  # one 16 MiB read chunk and gzip's buffers, not the 64 MiB present


def test_honest_gzip_is_read_into_one_array(tmp_path):
    "The counting pass and the second pass agree: a valid multi-chunk file reads back exactly."
    a = np.random.default_rng(0).integers(0, 256, (3, 2**12, 2**11), dtype=np.uint8)  # 24 MiB: two read chunks
    path = write_idx(tmp_path / 'big-idx3-ubyte.gz', a)
    np.testing.assert_array_equal(read_idx(path), a)


@pytest.mark.parametrize('gz', [False, True])
def test_too_many_dimensions_names_the_file(tmp_path, gz):
    path = write_bytes(tmp_path / 'deep', bytes([0, 0, 0x08, 100]) + struct.pack('>100I', *[1] * 100) + b'\1', gz)
    with pytest.raises(IDXFormatError, match='100-dimensional') as e: read_idx(path)
    assert str(path) in str(e.value)


def test_zero_test_images_name_the_file(tmp_path):
    folder = make_folder(tmp_path / 'd')
    write_idx(folder / 't10k-images-idx3-ubyte.gz', np.zeros((0, 28, 28), dtype=np.uint8))
    write_idx(folder / 't10k-labels-idx1-ubyte.gz', np.zeros(0, dtype=np.uint8))
    with pytest.raises(IDXFormatError, match='0 images') as e: read_idx_folder(folder)
    assert 't10k-images-idx3-ubyte' in str(e.value)


@pytest.mark.parametrize('damage', ['cut', 'crc'])
def test_corrupt_gzip_stream(tmp_path, damage):
    a = np.arange(1000, dtype=np.uint8) % 251
    good = gzip.compress(idx_header(0x08, a.shape) + a.tobytes())
    bad = good[:len(good) // 2] if damage == 'cut' else good[:-8] + bytes(8)  # half a stream / zeroed CRC and size
    path = tmp_path / 'broken.gz'; path.write_bytes(bad)
    with pytest.raises(IDXFormatError) as e: read_idx(path)
    assert str(path) in str(e.value)


def test_image_and_label_readers_check_the_kind(tmp_path):
    images = write_idx(tmp_path / 'images', np.zeros((2, 3, 3), dtype=np.uint8))
    labels = write_idx(tmp_path / 'labels', np.zeros(2, dtype=np.uint8))
    floats = write_idx(tmp_path / 'floats', np.zeros((2, 3, 3), dtype=np.float32))
    with pytest.raises(IDXFormatError, match='not an IDX image file'): read_idx_images(labels)
    with pytest.raises(IDXFormatError, match='not an IDX image file'): read_idx_images(floats)
    with pytest.raises(IDXFormatError, match='not an IDX label file'): read_idx_labels(images)
    assert read_idx_images(images).shape == (2, 3, 3) and read_idx_labels(labels).shape == (2,)


def test_labels_out_of_range(tmp_path):
    path = write_idx(tmp_path / 'labels', np.array([0, 9, 10, 255], dtype=np.uint8))
    with pytest.raises(IDXFormatError, match=r'2 label\(s\) out of range 0..9, e.g. label 10 at position 2') as e:
        read_idx_labels(path)
    assert str(path) in str(e.value)
    assert read_idx_labels(path, n_classes=256).max() == 255


# ---------------------------------------------------------------- folders of IDX files

@pytest.mark.parametrize('gz', [False, True])
@pytest.mark.parametrize('dotted', [False, True])
def test_folder_names(tmp_path, gz, dotted):
    raw = read_idx_folder(make_folder(tmp_path / 'd', gz=gz, dotted=dotted))
    assert raw['train'][0].shape == (40, 28, 28) and raw['test'][1].shape == (12,)


def test_folder_missing_file_names_the_expected_files(tmp_path):
    folder = make_folder(tmp_path / 'd')
    (folder / 't10k-labels-idx1-ubyte.gz').unlink()
    with pytest.raises(DatasetNotFoundError) as e: read_idx_folder(folder, hint='HOW TO GET IT')
    msg = str(e.value)
    assert 't10k-labels-idx1-ubyte[.gz]' in msg and str(folder) in msg and 'HOW TO GET IT' in msg
    assert all(stem in msg for stem in IDX_STEMS.values())
    with pytest.raises(DatasetNotFoundError, match='no such folder'): read_idx_folder(tmp_path / 'nowhere')
    with pytest.raises(DatasetNotFoundError): find_idx_file(folder, 'other-idx1-ubyte')


def test_folder_label_count_mismatch(tmp_path):
    folder = make_folder(tmp_path / 'd')
    write_idx(folder / 'train-labels-idx1-ubyte.gz', np.zeros(39, dtype=np.uint8))
    with pytest.raises(IDXFormatError, match='39 labels for the 40 images') as e: read_idx_folder(folder)
    assert 'train-labels-idx1-ubyte.gz' in str(e.value)


def test_folder_shape_mismatch(tmp_path):
    folder = make_folder(tmp_path / 'd')
    write_idx(folder / 't10k-images-idx3-ubyte.gz', np.zeros((12, 27, 28), dtype=np.uint8))
    with pytest.raises(IDXFormatError, match='train images are'): read_idx_folder(folder)


def test_folder_bad_file_inside_is_named(tmp_path):
    folder = make_folder(tmp_path / 'd')
    path = folder / 'train-images-idx3-ubyte.gz'
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-1]))
    with pytest.raises(IDXFormatError, match='truncated') as e: load_dataset(folder)
    assert str(path) in str(e.value)


# ---------------------------------------------------------------- load_dataset on IDX folders

def test_idx_splits(tmp_path):
    folder = make_folder(tmp_path / 'd', n_train=40, n_test=12)
    s = load_dataset(folder, valid_size=10)
    assert isinstance(s, DataSplits) and s.image_shape == (28, 28) and s.n_pixels == 784
    assert [len(s.train), len(s.valid), len(s.test)] == [30, 10, 12]
    assert set(s.train.index.tolist()) | set(s.valid.index.tolist()) == set(range(40))
    assert not set(s.train.index.tolist()) & set(s.valid.index.tolist())
    assert s.test.index.tolist() == list(range(12))
    for split in (s.train, s.valid, s.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        # images travel with their labels: image = 20 * label, fixed-binarized at 255/2
        expected = (split.y * 20 / 255 > 0.5).float()[:, None].expand(-1, 784)
        assert torch.equal(split.x, expected)
    assert torch.equal(load_dataset('mnist', path=folder, valid_size=10).valid.x, s.valid.x)
    assert load_dataset('mnist', path=folder, valid_size=10).name == 'mnist'


def test_fixed_threshold_at_half_of_255(tmp_path):
    folder = tmp_path / 'd'; folder.mkdir()
    px = np.array([0, 127, 128, 255], dtype=np.uint8)
    for part in ('train', 't10k'):
        write_idx(folder / f'{part}-images-idx3-ubyte', np.tile(px, (4, 1, 1)))
        write_idx(folder / f'{part}-labels-idx1-ubyte', np.zeros(4, dtype=np.uint8))
    s = load_idx_splits(folder, valid_size=1)
    assert s.test.x[0].tolist() == [0., 0., 1., 1.]
    grey = load_idx_splits(folder, valid_size=1, binarize='none')
    assert torch.allclose(grey.test.x[0], torch.tensor(px / 255, dtype=torch.float32))


def test_idx_split_arguments(tmp_path):
    folder = make_folder(tmp_path / 'd', n_train=40)
    for bad in (0, 40, -1):
        with pytest.raises(ValueError, match='valid_size'): load_dataset(folder, valid_size=bad)
    with pytest.raises(ValueError, match="only 'mnist' and 'fashion-mnist' take a path"): load_dataset(folder, path=folder)


def test_missing_data_sets_say_how_to_get_them(tmp_path):
    with pytest.raises(DatasetNotFoundError, match='no folder given') as e: load_dataset('mnist')
    assert 'mnist' in str(e.value).lower()
    with pytest.raises(DatasetNotFoundError, match='apt-get install dataset-fashion-mnist'):
        load_dataset('fashion-mnist', path=tmp_path / 'empty')
    with pytest.raises(DatasetNotFoundError, match='train-images-idx3-ubyte'):
        load_dataset('mnist', path=tmp_path)
    with pytest.raises(DatasetNotFoundError, match='neither a data set name'): load_dataset('cifar10')


def test_fashion_mnist_when_installed_or_a_helpful_error():
    "Runs either way: with the Debian package, the real shapes; without it, the message names the package."
    if (FASHION_MNIST_DIR / 'train-images-idx3-ubyte.gz').exists():
        s = load_dataset('fashion-mnist')
        assert [len(s.train), len(s.valid), len(s.test)] == [50000, 10000, 10000]
        assert s.image_shape == (28, 28) and s.classes[9] == 'Ankle boot'
        assert torch.equal(torch.bincount(s.test.y), torch.full((10,), 1000))
    else:
        with pytest.raises(DatasetNotFoundError, match='dataset-fashion-mnist'): load_dataset('fashion-mnist')


# ---------------------------------------------------------------- the digits

def test_digits_splits():
    s = load_dataset('digits')
    assert [len(s.train), len(s.valid), len(s.test)] == list(DIGITS_SIZES) == [1197, 300, 300]
    assert s.image_shape == (8, 8) and s.train.x.shape == (1197, 64) and s.binarize == 'fixed'
    idx = torch.cat([s.train.index, s.valid.index, s.test.index])
    assert torch.equal(idx.sort().values, torch.arange(1797))
    from sklearn.datasets import load_digits
    d = load_digits()
    for split in (s.train, s.valid, s.test):
        i = split.index.numpy()
        assert torch.equal(split.y, torch.from_numpy(d.target[i]))
        assert torch.equal(split.x, torch.from_numpy((d.data[i] > 8).astype(np.float32)))  # v/16 > 1/2


def test_digits_split_is_deterministic_and_seeded():
    a, b = load_dataset('digits'), load_dataset('digits')
    assert torch.equal(a.test.index, b.test.index) and torch.equal(a.train.x, b.train.x)
    c = load_dataset('digits', split_seed=1)
    assert not torch.equal(a.test.index, c.test.index)
    assert len(load_digits_splits(valid_size=100).train) == 1397


def test_dynamic_binarization_splits():
    s = load_dataset('digits', binarize='dynamic')
    assert s.dynamic and not load_dataset('digits').dynamic
    grey = load_dataset('digits', binarize='none')
    assert torch.equal(s.train.x, grey.train.x)  # train stays grey, resampled in batches
    for split in (s.valid, s.test):  # evaluation images sampled once, reproducibly
        assert set(split.x.unique().tolist()) == {0., 1.}
    assert torch.equal(s.test.x, load_dataset('digits', binarize='dynamic').test.x)
    assert not torch.equal(s.test.x, load_dataset('digits', binarize='dynamic', split_seed=1).test.x)
    assert not torch.equal(s.valid.x, load_dataset('digits', binarize='fixed').valid.x)


@pytest.mark.parametrize('kw,match', [(dict(binarize='otsu'), 'binarize must be one of'),
                                      (dict(binarize=True), 'binarize must be one of'),
                                      (dict(split_seed=-1), 'split_seed'), (dict(split_seed=1.0), 'split_seed'),
                                      (dict(valid_size=0), 'valid_size'), (dict(valid_size=1497), 'valid_size'),
                                      (dict(path='x'), 'take no path')])
def test_digits_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match): load_dataset('digits', **kw)


def test_split_and_datasplits_containers():
    s = load_dataset('digits')
    assert s.train.images.shape == (1197, 8, 8)
    assert s.train.images.data_ptr() == s.train.x.data_ptr()
    moved = s.to('cpu')
    assert torch.equal(moved.valid.x, s.valid.x) and moved.binarize == s.binarize
    assert 'train=1197' in repr(s) and 'binary' in repr(s.train)
    with pytest.raises(ValueError, match='x must be float32'):
        Split(torch.zeros(3, 10), torch.zeros(3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64), (3, 3))
    with pytest.raises(ValueError, match='y must be int64'):
        Split(torch.zeros(3, 9), torch.zeros(3, dtype=torch.int32), torch.zeros(3, dtype=torch.int64), (3, 3))
    assert BINARIZATIONS == ('fixed', 'dynamic', 'none')


def test_split_indices():
    parts = split_indices(100, (60, 30, 10), split_seed=3)
    assert [len(p) for p in parts] == [60, 30, 10]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(100))
    assert all(np.array_equal(a, b) for a, b in zip(parts, split_indices(100, (60, 30, 10), split_seed=3)))
    with pytest.raises(ValueError): split_indices(10, (5, 6))
    with pytest.raises(ValueError): split_indices(10, (-1, 5))


# ---------------------------------------------------------------- binarization

def test_to_unit_interval():
    x = to_unit_interval(np.array([[[0, 8], [16, 4]]]), 16)
    assert x.dtype == torch.float32 and x.tolist() == [[0., .5, 1., .25]]
    with pytest.raises(ValueError, match='0..255'): to_unit_interval(np.array([[256]]), 255)
    with pytest.raises(ValueError, match='max_value'): to_unit_interval(np.array([[0]]), 0)
    with pytest.raises(ValueError, match='shape'): to_unit_interval(np.array([1, 2]), 16)


def test_binarize_fixed_and_bad_input():
    x = torch.tensor([0., .5, .5001, 1.])
    assert binarize_fixed(x).tolist() == [0., 0., 1., 1.]
    for bad in (torch.tensor([1.5]), torch.tensor([-0.1]), torch.tensor([float('nan')]), torch.tensor([1])):
        with pytest.raises(ValueError): binarize_fixed(bad)
        with pytest.raises(ValueError): binarize_dynamic(bad)
    with pytest.raises(ValueError, match='threshold'): binarize_fixed(x, threshold=1.0)


def test_binarize_dynamic_is_bernoulli():
    "Per-pixel on-counts over K draws are Binomial(K, g): the summed squared z-scores are chi-square."
    g = torch.linspace(0, 1, 101).repeat(4, 1)  # 404 pixels, 0 and 1 included
    K = 2000
    gen = torch.Generator().manual_seed(123)
    counts = torch.zeros_like(g, dtype=torch.float64)
    for _ in range(K): counts += binarize_dynamic(g, gen)
    inside = (g > 0) & (g < 1)
    p = g[inside].double()
    chi2 = (((counts[inside] - K * p) ** 2) / (K * p * (1 - p))).sum().item()
    assert stats.chi2.sf(chi2, df=int(inside.sum())) > ALPHA
    assert counts[g == 0].max() == 0 and counts[g == 1].min() == K


def test_binarize_dynamic_generator_and_global_rng():
    g = torch.rand(20, 64, generator=torch.Generator().manual_seed(0))
    a = binarize_dynamic(g, torch.Generator().manual_seed(9))
    assert torch.equal(a, binarize_dynamic(g, torch.Generator().manual_seed(9)))
    assert a.dtype == g.dtype and a.shape == g.shape
    torch.manual_seed(0); expected = torch.rand(2)
    torch.manual_seed(0); binarize_dynamic(g, torch.Generator().manual_seed(9)); assert torch.equal(torch.rand(2), expected)


# ---------------------------------------------------------------- batches and seeds

def test_derive_seed():
    seeds = {derive_seed(s, e) for s in range(20) for e in range(20)}
    assert len(seeds) == 400 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(1, 0)
    for bad in (-1, 1.0, True, '1'):
        with pytest.raises(ValueError): derive_seed(bad)


def _epoch(x, y, seed, e, **kw):
    return [(xb.clone(), yb.clone()) for xb, yb in batches(x, 64, y=y, generator=epoch_generator(seed, e), **kw)]


def test_batches_cover_each_row_once_and_keep_pairs():
    s = load_dataset('digits')
    seen = _epoch(s.train.x, s.train.index, 0, 0)
    assert len(seen) == len(batches(s.train.x, 64)) == 19 and len(seen[-1][0]) == 1197 - 18 * 64
    order = torch.cat([yb for _, yb in seen])
    assert torch.equal(order.sort().values, s.train.index.sort().values)
    pos = {int(i): k for k, i in enumerate(s.train.index)}
    for xb, ib in seen:  # every image comes with its own label (here: its source index)
        assert torch.equal(xb, s.train.x[[pos[int(i)] for i in ib]])


def test_batches_are_a_function_of_seed_and_epoch():
    s = load_dataset('digits', binarize='dynamic')
    a = _epoch(s.train.x, s.train.y, 7, 3, dynamic=True)
    b = _epoch(s.train.x, s.train.y, 7, 3, dynamic=True)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    # a resumed run replays epochs 2 and 3 without replaying 0 and 1
    _epoch(s.train.x, s.train.y, 7, 0, dynamic=True)
    c = _epoch(s.train.x, s.train.y, 7, 3, dynamic=True)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, c))
    d = _epoch(s.train.x, s.train.y, 7, 4, dynamic=True)
    assert not torch.equal(torch.cat([q[1] for q in a]), torch.cat([q[1] for q in d]))
    assert all(set(xb.unique().tolist()) <= {0., 1.} for xb, _ in a)


def test_batches_with_a_checkpointed_generator_state():
    x = load_dataset('digits', binarize='none').train.x
    g = torch.Generator().manual_seed(1)
    list(batches(x, 100, generator=g, dynamic=True))  # epoch 0
    state = g.get_state()
    epoch1 = torch.cat(list(batches(x, 100, generator=g, dynamic=True)))
    g2 = torch.Generator(); g2.set_state(state)
    assert torch.equal(epoch1, torch.cat(list(batches(x, 100, generator=g2, dynamic=True))))


def test_dynamic_batches_resample_each_epoch_with_the_right_mean():
    "Over many epochs, each training pixel's on-frequency matches its grey level (chi-square over pixels)."
    x = load_dataset('digits', binarize='none').train.x[:50]
    ids = torch.arange(50, dtype=torch.int64)
    E = 400
    counts = torch.zeros_like(x, dtype=torch.float64)
    for e in range(E):
        for xb, ib in batches(x, 16, y=ids, generator=epoch_generator(0, e), dynamic=True):
            counts[ib] += xb
    inside = (x > 0) & (x < 1)
    p = x[inside].double()
    chi2 = (((counts[inside] - E * p) ** 2) / (E * p * (1 - p))).sum().item()
    assert stats.chi2.sf(chi2, df=int(inside.sum())) > ALPHA
    assert counts[x == 0].max() == 0 and counts[x == 1].min() == E


def test_batches_options_and_errors():
    x = load_dataset('digits').train.x
    assert torch.equal(torch.cat(list(batches(x, 100, shuffle=False))), x)
    assert len(batches(x, 100, drop_last=True)) == 11
    assert all(len(b) == 100 for b in batches(x, 100, drop_last=True))
    assert len(list(batches(x[:0], 10))) == 0
    it = batches(x, 100); list(it)
    with pytest.raises(RuntimeError, match='already used'): list(it)
    with pytest.raises(ValueError, match='batch_size'): batches(x, 0)
    with pytest.raises(ValueError, match='batch_size'): batches(x, 2.0)
    with pytest.raises(ValueError, match='one label per row'): batches(x, 10, y=torch.zeros(3))
    with pytest.raises(ValueError, match=r'\[0, 1\]'): batches(x * 2, 10, dynamic=True)
    torch.manual_seed(0); expected = torch.rand(2)
    torch.manual_seed(0); list(batches(x, 100, generator=torch.Generator().manual_seed(0), dynamic=True))
    assert torch.equal(torch.rand(2), expected)  # the global RNG is untouched


def test_fashion_mnist_default_folder_is_used(tmp_path, monkeypatch):
    "Both branches run on every machine: a stand-in package folder is found, a missing one names the package."
    import gumbel_tut.data as data
    monkeypatch.setattr(data, 'FASHION_MNIST_DIR', make_folder(tmp_path / 'fashion'))
    s = load_dataset('fashion-mnist', valid_size=10)
    assert s.name == 'fashion-mnist' and s.classes[0] == 'T-shirt/top' and len(s.test) == 12
    monkeypatch.setattr(data, 'FASHION_MNIST_DIR', tmp_path / 'not-installed')
    with pytest.raises(DatasetNotFoundError, match='sudo apt-get install dataset-fashion-mnist'):
        load_dataset('fashion-mnist')


# ---------------------------------------------------------------- the two modules

def test_idx_names_are_still_importable_from_data():
    "The IDX names moved to gumbel_tut.idx (library note 20); gumbel_tut.data re-imports the very same objects."
    import gumbel_tut.data as data, gumbel_tut.idx as idx
    for name in IDX_NAMES: assert getattr(data, name) is getattr(idx, name), name
    assert not set(IDX_NAMES) & set(data.__all__), 'documented once, in gumbel_tut.idx (library note 20)'


def test_idx_does_not_import_data():
    "Dependencies flow one way: the chapter's module imports the library note's, never the reverse."
    code = ("import sys, gumbel_tut.idx; "
            "assert 'gumbel_tut.data' not in sys.modules and 'sklearn' not in sys.modules, sorted(sys.modules)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
