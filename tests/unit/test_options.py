"""The one option schema: spellings, precedence, and the errors people see."""

from __future__ import annotations

from pathlib import Path

import pytest

from aisbatchfs import options
from aisbatchfs.options import OptionError, resolve


def test_defaults():
    s = resolve({})
    assert s.archives == "dir" and s.metadata_ttl == 60.0 and s.umask == 0o022
    assert s.fuse_options == set()


def test_o_spelling_converts_types():
    s = resolve({}, ["archives=both,metadata_ttl=2.5", "umask=027,uid=5,read_timeout=9"])
    assert (s.archives, s.metadata_ttl, s.umask, s.uid, s.read_timeout) == ("both", 2.5, 0o027, 5, 9.0)


def test_precedence_flags_over_o_over_env_over_file():
    file_values = {"metadata_ttl": 1, "negative_ttl": 2, "read_timeout": 3, "archives": "file"}
    env = {"AISBATCHFS_NEGATIVE_TTL": "20", "AISBATCHFS_READ_TIMEOUT": "30",
           "AISBATCHFS_ARCHIVES": "both"}
    s = resolve({"archives": "dir"}, ["read_timeout=300"], env=env, file_values=file_values)
    assert s.metadata_ttl == 1  # file
    assert s.negative_ttl == 20  # env over file
    assert s.read_timeout == 300  # -o over env
    assert s.archives == "dir"  # flag over everything


def test_fuse_and_generic_mount_options():
    s = resolve({}, ["rw,dev,suid,nofail,_netdev,noauto,x-systemd.automount,noatime",
                     "allow_other,default_permissions,fsname=mine,auto_unmount"])
    assert s.fuse_options == {"dev", "suid", "allow_other", "default_permissions",
                              "fsname=mine", "auto_unmount"}


@pytest.mark.parametrize("spec, message", [
    ("colour=blue", "-o colour: unknown option"),
    ("archives=maybe", "allowed values are dir, file, both"),
    ("umask=999", "umask='999'"),
    ("metadata_ttl=-1", "expected seconds >= 0"),
    ("read_timeout=0", "expected seconds > 0"),
    ("uid", "needs a value"),
    ("foreground=true", "unknown option"),  # a command-line switch, not an -o key
])
def test_bad_options_are_refused_by_name(spec, message):
    with pytest.raises(OptionError, match=message.replace("?", r"\?").replace("(", r"\(")):
        resolve({}, [spec])


def test_bad_file_keys_and_env_values_name_their_source():
    with pytest.raises(OptionError, match="config file: unknown key 'colour'"):
        resolve({}, file_values={"colour": "blue"})
    with pytest.raises(OptionError, match="AISBATCHFS_UMASK"):
        resolve({}, env={"AISBATCHFS_UMASK": "z"})


def test_sizes():
    assert options.parse_size("512MiB") == 512 << 20
    assert options.parse_size("4g") == 4 << 30
    assert options.parse_size("1048576") == 1 << 20
    with pytest.raises(ValueError):
        options.parse_size("lots")


def test_the_documented_options_table_is_the_generated_one():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "options.md").read_text()
    assert options.markdown_table() in doc, (
        "docs/options.md: replace its table with the output of python -m aisbatchfs.options")


@pytest.mark.parametrize("spec", [
    "uid=-1", "gid=4294967295", "batch_max_items=0", "batches_in_flight=0", "max_tasks=0",
    "read_timeout=nan", "metadata_timeout=inf", "metadata_ttl=nan", "coalesce_ms=inf",
    "cache_size=0", "batch_max_object=-1KiB",
])
def test_values_that_once_mounted_a_broken_daemon_are_refused(spec):
    """uid=-1 mounted and then failed every request; zero counts made every read wait;
    nan deadlines failed reads at random."""
    with pytest.raises(OptionError, match=f"-o: {spec.split('=')[0]}="):
        resolve({}, [spec])


# bad values for every kind of value the schema has; every option is tried with its kind's
BAD = {
    options._id: ["-1", "4294967295", "1.5", "root", ""],
    options._count: ["0", "-3", "2.5", "many", "1000001"],
    options._seconds: ["-1", "nan", "inf", "-inf", "soon"],
    options._positive_seconds: ["0", "-1", "nan", "inf", "soon"],
    options._milliseconds: ["-1", "nan", "inf", "1001"],
    options._share: ["0", "-0.1", "1.5", "nan", "inf", "half"],
    options.parse_size: ["0", "-1MiB", "nan", "infMiB", "lots", "12XB"],
    options._cache_size: ["0", "512KiB", "nan", "lots"],
    options._octal: ["8", "-1", "10000", "rwx"],
    options._bool: ["maybe", "2"],
    options._choice: ["nonsense"],
    options._addr: ["9100", "host:", "host:0", "host:70000", "host:http"],
    options._text: ["", "  "],
}


@pytest.mark.parametrize("opt", [o for o in options.OPTIONS if not o.cli_only],
                         ids=lambda o: o.name)
def test_every_option_refuses_bad_values_by_name(opt):
    assert opt.parse in BAD, f"{opt.name}: add its kind of value to BAD"
    for bad in BAD[opt.parse]:
        with pytest.raises(OptionError, match=f"{opt.name}="):
            opt.convert(bad, "-o")
