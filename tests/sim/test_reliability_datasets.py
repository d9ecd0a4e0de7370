"""Datasets cannot rot silently (issue 18): every shard carries a SHA-256 that the reader and a resumed collection
verify; a flipped bit is named by the reader and collected again by ``collect``; datasets without checksums stay
readable (one warning); absurd sizes are refused in one line before anything is allocated. Real PyBullet episodes,
real HDF5 shards."""

from __future__ import annotations

import hashlib
import re
import shutil
import time
import warnings
from pathlib import Path

import pytest

from imagine_ros.cli import main as cli_main
from imagine_ros.constants import FRAMES
from imagine_ros.errors import DatasetError
from imagine_ros.sim import storage
from imagine_ros.sim.collect import collect_push
from imagine_ros.sim.storage import CHECKSUM_MAGIC, SHARD_USERBLOCK, EpisodeStore, verify_shard

SMALL = {"image_size": 32, "ground_truth": False}
SETTINGS = dict(episodes=3, frames=4, shard_size=1, env_options=SMALL, progress=False)


def digest(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "data"
    collect_push(out, **SETTINGS)
    return out


def flip_bit(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_every_shard_carries_the_sha256_of_its_hdf5_data(reference):
    for shard in sorted(reference.glob("shard-*.h5")):
        raw = shard.read_bytes()
        assert raw.startswith(CHECKSUM_MAGIC)
        expected = raw[len(CHECKSUM_MAGIC) : len(CHECKSUM_MAGIC) + 64].decode()
        assert hashlib.sha256(raw[SHARD_USERBLOCK:]).hexdigest() == expected
        assert verify_shard(shard) is True


@pytest.mark.parametrize("where", ["data", "checksum"])
def test_a_flipped_bit_is_named_by_the_reader_and_collected_again(reference, tmp_path, capsys, where):
    data = tmp_path / "d"
    shutil.copytree(reference, data)
    shard = data / "shard-00001.h5"
    offset = shard.stat().st_size // 2 if where == "data" else len(CHECKSUM_MAGIC) + 5
    flip_bit(shard, offset)
    with pytest.raises(DatasetError, match=r"corrupt shard .*shard-00001\.h5: its SHA-256 does not match"):
        EpisodeStore(data)
    report = collect_push(data, **SETTINGS)
    err = capsys.readouterr().err
    assert "shard-00001.h5" in err and "collecting it again" in err
    assert report.shards_redone == [1] and report.shards_written == [1] and report.shards_skipped == [0, 2]
    assert digest(data) == digest(reference)  # a pure function of the settings and seeds: exactly the same bytes
    assert len(EpisodeStore(data)) == 3


def test_the_cli_says_which_shard_was_corrupt(reference, tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(reference, data)
    flip_bit(data / "shard-00002.h5", 2000)
    args = ["--episodes", "3", "--frames", "4", "--shard-size", "1", "--image-size", "32", "--no-ground-truth"]
    assert cli_main(["collect", "--out", str(data), *args, "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "corrupt shard" in err and "shard-00002.h5" in err
    assert "1 found corrupt and collected again" in out
    assert digest(data) == digest(reference)


def test_the_reader_names_the_file_when_data_cannot_be_read_unchecked(reference, tmp_path):
    """Without the open-time check (check=False) a damaged chunk still names its file."""
    data = tmp_path / "d"
    shutil.copytree(reference, data)
    shard = data / "shard-00000.h5"
    raw = bytearray(shard.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 64] = bytes(64)  # wipe part of a compressed frame chunk
    shard.write_bytes(bytes(raw))
    store = EpisodeStore(data, check=False)
    with pytest.raises(DatasetError, match=r"corrupt shard .*shard-00000\.h5"):
        for key in store.keys():
            store.read(0, key)


def test_datasets_without_checksums_stay_readable_with_one_warning(tmp_path, monkeypatch):
    old = tmp_path / "old"
    with monkeypatch.context() as m:
        m.setattr(storage, "SHARD_USERBLOCK", 0)  # how imagine_ros wrote shards before checksums
        collect_push(old, **SETTINGS)
    assert (old / "shard-00000.h5").read_bytes()[:8] == storage.HDF5_SIGNATURE
    assert verify_shard(old / "shard-00000.h5") is False
    with pytest.warns(UserWarning, match=r"3 shard\(s\) carry no checksum .* read unverified"):
        store = EpisodeStore(old)
    assert store.read(0, FRAMES).shape == (4, 32, 32, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per dataset and process
        EpisodeStore(old)
        report = collect_push(old, **SETTINGS)  # resume keeps them
    assert report.shards_skipped == [0, 1, 2] and not report.shards_redone


@pytest.mark.parametrize(
    "args, message",
    [
        (["--episodes", "1e12"], r"--episodes must be an integer in \[1, 1,000,000\], got 1000000000000"),
        (["--episodes", "1000000000000"], r"--episodes must be an integer in \[1, 1,000,000\]"),
        (["--episodes", "0"], r"--episodes must be an integer in \[1, 1,000,000\], got 0"),
        (["--episodes", "4", "--shard-size", "1e9"], r"--shard-size must be an integer in \[1, 10,000\]"),
        (["--episodes", "4", "--frames", "1e9"], r"--frames must be an integer in \[1, 100,000\]"),
        (
            ["--episodes", "10000", "--shard-size", "10000", "--frames", "1000", "--image-size", "256"],
            r"would hold 1831.1 GiB of frames in memory \(at most 4 GiB\); use a smaller --shard-size",
        ),
    ],
)
def test_absurd_sizes_are_refused_in_one_line_before_anything_is_allocated(tmp_path, capsys, args, message):
    out = tmp_path / "d"
    t0 = time.perf_counter()
    assert cli_main(["collect", "--out", str(out), *args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert time.perf_counter() - t0 < 5.0
    assert err.startswith("imagine-ros: error:") and "\n" not in err, err
    assert re.search(message, err), err
    assert not out.exists()
