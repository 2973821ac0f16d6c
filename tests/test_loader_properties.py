"""Property-based tests of the pickle loader and the row decoders (hypothesis): valid arrays round-trip
exactly; random and mutated bytes give a ValueError or arrays made only of bytes the input holds."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ray_gait.io.dataset import decode_heatmap, decode_silhouette, heatmap_row
from ray_gait.io.safe_pickle import ALLOWED_DTYPES, loads_arrays
from ray_gait.pose.io import decode_pose, pose_row

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DTYPES = st.sampled_from(sorted(ALLOWED_DTYPES)).flatmap(
    lambda name: st.sampled_from(["<", ">"] if np.dtype(name).itemsize > 1 else ["|"]).map(
        lambda order: np.dtype(name).newbyteorder(order)))
ARRAYS = DTYPES.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@SETTINGS
@given(ARRAYS, st.integers(0, pickle.HIGHEST_PROTOCOL), st.booleans())
def test_valid_arrays_round_trip_exactly(arr, protocol, fortran):
    arr = np.asfortranarray(arr) if fortran else arr
    out = loads_arrays(pickle.dumps(arr, protocol=protocol))
    assert _same(out, arr) and out.flags.writeable


@SETTINGS
@given(st.lists(ARRAYS, min_size=1, max_size=4), st.integers(2, pickle.HIGHEST_PROTOCOL))
def test_containers_of_arrays_round_trip(arrays, protocol):
    obj = {"list": arrays, "tuple": tuple(arrays[:2]), "nested": [[arrays[0]]]}
    out = loads_arrays(pickle.dumps(obj, protocol=protocol))
    assert all(_same(a, b) for a, b in zip(out["list"], arrays))
    assert all(_same(a, b) for a, b in zip(out["tuple"], arrays[:2]))
    assert _same(out["nested"][0][0], arrays[0])


def _arrays_in(obj) -> list[np.ndarray]:
    if isinstance(obj, np.ndarray):
        return [obj]
    items = obj.values() if isinstance(obj, dict) else obj
    return [a for item in items for a in _arrays_in(item)]


@SETTINGS
@given(st.binary(max_size=512))
def test_random_bytes_are_refused_or_harmless(data):
    """Harmless: what random bytes load as is plain data only (arrays of an allowed dtype, numbers, strings,
    containers of them), never an object of any other class."""
    try:
        out = loads_arrays(data)
    except ValueError:
        return
    assert _plain(out), f"{data!r} loaded as {out!r}"


PLAIN_SCALARS = (str, bytes, int, float, complex, bool, type(None))


def _plain(obj) -> bool:
    """True for arrays of an allowed dtype, plain scalars, and lists, tuples and dicts made of them."""
    if isinstance(obj, np.ndarray):
        return obj.dtype.str[1:] in ALLOWED_DTYPES
    if isinstance(obj, (list, tuple)):
        return all(_plain(item) for item in obj)
    if isinstance(obj, dict):
        return all(_plain(k) and _plain(v) for k, v in obj.items())
    return type(obj) in PLAIN_SCALARS


def test_the_harmless_check_refuses_other_objects():
    assert _plain({"a": [np.zeros(2, np.float32), 1, "x", None]})
    assert not _plain([np.zeros(2, object)]) and not _plain({"f": len}) and not _plain(object())


@SETTINGS
@given(ARRAYS.filter(lambda a: a.size > 0), st.integers(3, pickle.HIGHEST_PROTOCOL),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6))
def test_mutated_pickles_never_make_up_values(arr, protocol, flips):
    """Protocols 3-5 carry array data verbatim: whatever a mutated pickle yields is bytes of the file."""
    data = bytearray(pickle.dumps(arr, protocol=protocol))
    for where, value in flips:
        data[where % len(data)] = value
    try:
        out = loads_arrays(bytes(data))
    except ValueError:
        return
    for found in _arrays_in(out):
        assert found.nbytes == 0 or np.ascontiguousarray(found).tobytes() in bytes(data) \
            or np.asfortranarray(found).tobytes(order="F") in bytes(data)


SHAPE_VALUES = st.one_of(st.integers(-3, 6), st.integers(-(2**40), 2**40), st.none(),
                         st.sampled_from([1.5, "3", True]))


@SETTINGS
@given(st.tuples(SHAPE_VALUES, SHAPE_VALUES, SHAPE_VALUES), st.binary(max_size=300))
def test_heatmap_decoder_accepts_only_exact_positive_shapes(shape, payload):
    frames, height, width = shape
    row = {"id": "1", "type": "nm-01", "view": "000", "seq": "s", "source": "1/nm-01/000/s.pkl",
           "frames": frames, "height": height, "width": width, "heatmap": payload}
    valid = all(type(v) is int and v > 0 for v in shape) and len(payload) == frames * 2 * height * width
    if not valid:
        with pytest.raises(ValueError):
            decode_heatmap(row)
        return
    out = decode_heatmap(row)
    assert out.shape == (frames, 2, height, width) and out.tobytes() == payload


@SETTINGS
@given(st.tuples(SHAPE_VALUES, SHAPE_VALUES, SHAPE_VALUES), st.binary(max_size=300))
def test_silhouette_decoder_accepts_only_exact_positive_shapes(shape, payload):
    frames, height, width = shape
    row = {"source": "x", "sil_frames": frames, "sil_height": height, "sil_width": width, "silhouette": payload}
    valid = all(type(v) is int and v > 0 for v in shape) and len(payload) == frames * height * width
    if not valid:
        with pytest.raises(ValueError):
            decode_silhouette(row)
        return
    assert decode_silhouette(row).tobytes() == payload


@SETTINGS
@given(st.tuples(SHAPE_VALUES, SHAPE_VALUES), st.binary(max_size=400))
def test_pose_decoder_accepts_only_exact_positive_shapes(shape, payload):
    frames, joints = shape
    row = {"source": "x", "frames": frames, "joints": joints, "pose": payload}
    valid = all(type(v) is int and v > 0 for v in shape) and len(payload) == frames * joints * 3 * 4
    if not valid:
        with pytest.raises(ValueError):
            decode_pose(row)
        return
    assert decode_pose(row).tobytes() == payload


@SETTINGS
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 5), st.just(2), st.integers(1, 9), st.integers(1, 9))),
       hnp.arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 18), st.just(3))))
def test_valid_rows_round_trip(heatmap, pose):
    key = {"id": "1", "type": "nm-01", "view": "000", "seq": "s", "source": "1/nm-01/000/s.pkl"}
    assert np.array_equal(decode_heatmap(heatmap_row(key, heatmap)), heatmap)
    decoded = decode_pose(pose_row(key, pose))
    assert decoded.tobytes() == pose.tobytes() and decoded.shape == pose.shape
