"""errors (the code table, CNIError, kernel_errors, ErrorList) and version helpers."""

from __future__ import annotations

import errno
import json

import pytest

from cni_plugins import version
from cni_plugins.errors import CNIError, Code, ErrorList, code_for_errno, kernel_errors


def test_code_table_matches_the_spec() -> None:
    assert {c.name: int(c) for c in Code} == {
        "INCOMPATIBLE_CNI_VERSION": 1, "UNSUPPORTED_FIELD": 2, "UNKNOWN_CONTAINER": 3,
        "INVALID_ENVIRONMENT_VARIABLES": 4, "IO_FAILURE": 5, "DECODING_FAILURE": 6,
        "INVALID_NETWORK_CONFIG": 7, "INVALID_NETNS": 8, "TRY_AGAIN_LATER": 11,
        "PLUGIN_NOT_AVAILABLE": 50, "LIMITED_CONNECTIVITY": 51, "INTERNAL": 999}


def test_cni_error_json_round_trip() -> None:
    e = CNIError(Code.TRY_AGAIN_LATER, "busy", "EAGAIN")
    obj = e.to_json("0.4.0")
    assert obj == {"cniVersion": "0.4.0", "code": 11, "msg": "busy", "details": "EAGAIN"}
    assert type(obj["code"]) is int                 # not the IntEnum: plain JSON
    back = CNIError.from_json(json.loads(json.dumps(obj)))
    assert (back.code, back.msg, back.details) == (11, "busy", "EAGAIN")
    assert str(back) == "busy: EAGAIN" and str(CNIError(7, "bad")) == "bad"


@pytest.mark.parametrize("obj", [None, [], {"msg": "x"}, {"code": "7", "msg": "x"}])
def test_from_json_refuses_non_errors(obj: object) -> None:
    with pytest.raises(ValueError):
        CNIError.from_json(obj)


@pytest.mark.parametrize(("err", "code"), [
    (errno.EAGAIN, Code.TRY_AGAIN_LATER), (errno.EBUSY, Code.TRY_AGAIN_LATER),
    (errno.EPERM, Code.IO_FAILURE), (errno.EACCES, Code.IO_FAILURE),
    (errno.ENODEV, Code.INTERNAL), (errno.EEXIST, Code.INTERNAL), (None, Code.INTERNAL),
])
def test_code_for_errno(err: int | None, code: Code) -> None:
    assert code_for_errno(err) == code


def test_kernel_errors_names_what_failed() -> None:
    with pytest.raises(CNIError) as e:
        with kernel_errors("set link 'eth0' up"):
            raise OSError(errno.ENODEV, "No such device")
    assert (e.value.code, e.value.msg, e.value.details) == (
        Code.INTERNAL, "failed to set link 'eth0' up: No such device", "ENODEV")
    assert isinstance(e.value.__cause__, OSError)


def test_kernel_errors_without_strerror() -> None:
    with pytest.raises(CNIError) as e:
        with kernel_errors("add route"):
            raise OSError(errno.EPERM, None)
    assert e.value.code == Code.IO_FAILURE
    assert e.value.msg == "failed to add route: Operation not permitted"


def test_kernel_errors_leaves_other_exceptions() -> None:
    with pytest.raises(KeyError):
        with kernel_errors("x"):
            raise KeyError("k")
    with kernel_errors("nothing"):
        pass


def test_error_list_collects_and_joins() -> None:
    el = ErrorList()
    el.raise_if_any()                               # nothing collected: no-op
    with el.collect():
        raise CNIError(Code.IO_FAILURE, "failed to delete link", "EIO")
    with el.collect():
        pass
    with el.collect():
        raise CNIError(Code.INTERNAL, "failed to delete rule")
    with pytest.raises(CNIError) as e:
        el.raise_if_any()
    assert (e.value.code, e.value.msg, e.value.details) == (
        Code.IO_FAILURE, "failed to delete link; failed to delete rule", "EIO")


def test_error_list_single_error_is_raised_as_is() -> None:
    el = ErrorList()
    err = CNIError(Code.TRY_AGAIN_LATER, "locked")
    with el.collect():
        raise err
    with pytest.raises(CNIError) as e:
        el.raise_if_any()
    assert e.value is err


def test_error_list_lets_other_exceptions_through() -> None:
    el = ErrorList()
    with pytest.raises(RuntimeError):
        with el.collect():
            raise RuntimeError("bug")
    assert el.errors == []


# --- version ------------------------------------------------------------------------------


@pytest.mark.parametrize(("v", "parsed"), [("0.3.1", (0, 3, 1)), ("1.10.0", (1, 10, 0))])
def test_version_parse(v: str, parsed: tuple[int, int, int]) -> None:
    assert version.parse(v) == parsed


@pytest.mark.parametrize("v", ["1.0", "1.0.0.0", "a.b.c", "", "1.0.x", "-1.0.0"])
def test_version_parse_refuses(v: str) -> None:
    with pytest.raises(ValueError):
        version.parse(v)


def test_version_ordering_is_numeric() -> None:
    assert version.at_least("0.10.0", "0.4.0")
    assert not version.at_least("0.3.1", "0.4.0")
    assert [v for v in version.ALL if version.has_check(v)] == ["0.4.0", "1.0.0", "1.1.0"]
    assert [v for v in version.ALL if version.has_gc(v)] == ["1.1.0"]
    assert sorted(version.ALL, key=version.parse) == list(version.ALL)


def test_version_info() -> None:
    assert json.loads(version.version_info()) == {"cniVersion": "1.1.0",
                                                  "supportedVersions": list(version.ALL)}
    assert json.loads(version.version_info(("0.4.0",)))["supportedVersions"] == ["0.4.0"]


@pytest.mark.parametrize(("conf", "chosen"), [
    ({}, "0.1.0"), ({"cniVersion": ""}, "0.1.0"), ({"cniVersion": None}, "0.1.0"),
    ({"cniVersion": "0.3.1"}, "0.3.1"),
    ({"cniVersion": "1.0.0", "cniVersions": ["1.1.0"]}, "1.0.0"),     # cniVersion decides
    ({"cniVersions": ["0.4.0", "1.0.0"]}, "1.0.0"),
])
def test_reconcile(conf: dict, chosen: str) -> None:
    assert version.reconcile(conf) == chosen


def test_reconcile_against_a_plugins_versions() -> None:
    assert version.reconcile({"cniVersions": ["0.4.0", "1.1.0"]}, ("0.3.1", "0.4.0")) == "0.4.0"
    with pytest.raises(CNIError) as e:
        version.reconcile({"cniVersion": "1.1.0"}, ("0.3.1", "0.4.0"))
    assert e.value.code == 1
    assert e.value.details == 'config is "1.1.0", plugin supports ["0.3.1" "0.4.0"]'
