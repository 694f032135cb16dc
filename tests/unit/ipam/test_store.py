"""host-local's store on a tmp dir: Go's layout, exclusive atomic reservations, the lock."""

from __future__ import annotations

import os
import threading
import time

import pytest

from cni_plugins.errors import CNIError
from cni_plugins.ipam._store import LOCK, TMP, Owner, Store


def files(d) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir()}


def test_layout_and_content_match_go(tmp_path):
    with Store.open(str(tmp_path), "net1") as s:
        assert s.reserve("10.1.2.2", Owner("ctr1", "eth0"))
        s.set_last_reserved(0, "10.1.2.2")
        assert s.reserve("fd00::2", Owner("ctr1", "eth0"))
        s.set_last_reserved(1, "fd00::2")
    d = tmp_path / "net1"
    assert files(d) == {"lock": b"", "10.1.2.2": b"ctr1\r\neth0", "fd00::2": b"ctr1\r\neth0",
                        "last_reserved_ip.0": b"10.1.2.2", "last_reserved_ip.1": b"fd00::2"}
    assert oct(d.stat().st_mode & 0o777) == oct(0o755 & ~_umask())
    assert oct((d / "10.1.2.2").stat().st_mode & 0o777) == oct(0o644 & ~_umask())
    assert oct((d / LOCK).stat().st_mode & 0o777) == oct(0o750 & ~_umask())


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


@pytest.mark.parametrize("tmpfile", [True, False], ids=["O_TMPFILE", "named-temp"])
def test_reserve_is_exclusive(tmp_path, tmpfile):
    with Store.open(str(tmp_path), "n") as s:
        s._tmpfile = tmpfile
        assert s.reserve("10.0.0.2", Owner("a", "eth0"))
        assert not s.reserve("10.0.0.2", Owner("b", "eth0"))
        assert [r.owner for r in s.scan().reservations()] == [Owner("a", "eth0")]
    assert sorted(files(tmp_path / "n")) == ["10.0.0.2", "lock"]     # no temp left behind


def test_scan_reads_owners_and_skips_bookkeeping(tmp_path):
    d = tmp_path / "n"
    d.mkdir()
    (d / "10.0.0.2").write_bytes(b"c1\r\neth0")
    (d / "10.0.0.3").write_bytes(b"legacy-ctr\n")        # written before ifnames were kept
    (d / "fd00::5").write_bytes(b"  c2\r\nnet1  ")
    (d / "last_reserved_ip.0").write_bytes(b"10.0.0.3")
    (d / "README").write_bytes(b"c1\r\neth0")            # not an address: not a reservation
    (d / f"{TMP}10.0.0.9.123").write_bytes(b"c9\r\neth0")  # a crashed writer's temp
    with Store.open(str(tmp_path), "n") as s:
        held = s.scan()
        got = {r.name: r.owner for r in held.reservations()}
    assert got == {"10.0.0.2": Owner("c1", "eth0"), "10.0.0.3": Owner("legacy-ctr", None),
                   "fd00::5": Owner("c2", "net1")}
    assert not (d / f"{TMP}10.0.0.9.123").exists()
    assert Owner("legacy-ctr", None).legacy_of("legacy-ctr")
    # owners compared as bytes: exact first, files with only the ID as the fallback
    assert sorted(held.names_of("c1", "eth0")) == ["10.0.0.2", "README"]
    assert held.names_of("legacy-ctr", "eth3") == ["10.0.0.3"]
    assert held.names_of("c2", "eth0") == []
    assert sorted(held.names_of("c2", "net1")) == ["fd00::5"]
    assert not Owner("c1", "eth0").legacy_of("c1")


def test_release_and_last_reserved(tmp_path):
    with Store.open(str(tmp_path), "n") as s:
        assert s.last_reserved(0) == ""
        s.reserve("10.0.0.2", Owner("a", "eth0"))
        assert s.release("10.0.0.2")
        assert not s.release("10.0.0.2")
        s.set_last_reserved(3, "10.0.0.7")
        s.set_last_reserved(3, "10.0.0.8")
        assert s.last_reserved(3) == "10.0.0.8"
    assert sorted(files(tmp_path / "n")) == ["last_reserved_ip.3", "lock"]


def test_open_without_create_on_missing_dir_yields_none(tmp_path):
    with Store.open(str(tmp_path / "absent"), "n", create=False) as s:
        assert s is None
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../escape", ""])
def test_network_name_cannot_escape_data_dir(tmp_path, name):
    with pytest.raises(CNIError) as e:
        with Store.open(str(tmp_path / "data"), name):
            pass
    assert e.value.code == 7
    assert not (tmp_path / "data").exists() and not (tmp_path / "escape").exists()


def test_data_dir_that_is_a_file_is_an_io_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(CNIError) as e:
        with Store.open(str(tmp_path / "file"), "n"):
            pass
    assert e.value.code == 5 and "ipam.dataDir" in e.value.msg


def test_lock_excludes_a_second_holder(tmp_path):
    """flock is per open file: a second Store.open waits for the first to close."""
    order: list[str] = []
    inside = threading.Event()

    def holder() -> None:
        with Store.open(str(tmp_path), "n"):
            inside.set()
            time.sleep(0.3)
            order.append("first out")

    t = threading.Thread(target=holder)
    t.start()
    inside.wait(5)
    with Store.open(str(tmp_path), "n"):
        order.append("second in")
    t.join()
    assert order == ["first out", "second in"]
