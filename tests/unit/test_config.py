"""Configuration: defaults, the example file, and errors that name the setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance import config as config_mod
from appliance.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "appliance.example.toml"


def test_defaults_work_without_a_file() -> None:
    cfg = config_mod.load(None, env={})
    assert cfg.dicom.ae_title == "APPLIANCE"
    assert cfg.dicom.port == 11112
    assert (cfg.web.https, cfg.web.port, cfg.web.http_redirect, cfg.web.http_port) == (
        True, 8443, True, 8080,
    )  # fmt: skip
    # Absolute from the start (issue 15: a relative one was looked up under web/).
    assert cfg.data_dir == Path.cwd() / "appliance-data" and cfg.data_dir.is_absolute()
    assert cfg.devices == () and cfg.destinations == () and cfg.printers == ()


def test_example_file_is_valid_and_every_setting_is_documented() -> None:
    config_mod.load(EXAMPLE, env={})
    text = EXAMPLE.read_text()
    sections = {
        m.group(1) for m in re.finditer(r"^#?\s*\[\[?(\w+(?:\.\w+)?)\]\]?", text, re.MULTILINE)
    }
    keys = set(re.findall(r"^#?\s*(\w+)\s*=", text, re.MULTILINE))
    for section, key, doc in config_mod.documented_settings():
        assert doc, f"{section}.{key} has no documentation in config.py"
        assert key in keys, f"{section}.{key} is not documented in appliance.example.toml"
        if section:
            assert section in sections, f"[{section}] is missing from appliance.example.toml"


def test_issue_shapes_load(tmp_path: Path) -> None:
    f = tmp_path / "a.toml"
    f.write_text(
        """
[dicom]
ae_title = "APPLIANCE"
port = 11112
[web]
host = "0.0.0.0"
port = 8443
[[devices]]
ae_title = "CT1"
[[destinations]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = 4242
[[printers]]
name = "ward"
uri = "folder:prints"
"""
    )
    cfg = config_mod.load(f, env={})
    assert cfg.device("CT1") is not None
    assert cfg.destinations[0].port == 4242
    assert cfg.printers[0].uri == "folder:prints"


def test_env_variable_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "a.toml"
    f.write_text('[dicom]\nae_title = "FROMENV"\n')
    assert config_mod.load(None, env={"APPLIANCE_CONFIG": str(f)}).dicom.ae_title == "FROMENV"


@pytest.mark.parametrize(
    ("toml", "setting", "reason"),
    [
        ('[dicom]\nae_title = "ABCDEFGHIJKLMNOPQ"', "dicom.ae_title", "longer than 16"),
        ('[dicom]\nae_title = "A\\\\B"', "dicom.ae_title", "backslash"),
        ('[dicom]\nae_title = "A\\tB"', "dicom.ae_title", "control"),
        ('[dicom]\nae_title = "   "', "dicom.ae_title", "empty"),
        ("[dicom]\nport = 70000", "dicom.port", "not a port"),
        ('[dicom]\nport = "11112"', "dicom.port", "not of type int"),
        ("[web]\nport = -1", "web.port", "not a port"),
        ('[web]\nhost = "bad host!"', "web.host", "neither an IP"),
        ("[web]\nport = 8080", "web.http_port", "also web.port"),
        ('[web]\ntls_cert = "/x.crt"', "web.tls_key", "needed as well"),
        (
            '[web]\ntls_cert = "/nonexistent.crt"\ntls_key = "/nonexistent.key"',
            "web.tls_cert",
            "not a readable file",
        ),
        (
            '[[destinations]]\nname = "p"\nae_title = "P"\nhost = "h"\ntls = true\ntls_ca = "/nonexistent.pem"',
            "destinations[0].tls_ca",
            "not a readable file",
        ),
        (
            '[[destinations]]\nname = "p"\nae_title = "P"\nhost = "h"\ntls_cert = "/etc/hostname"',
            "destinations[0].tls_key",
            "needed as well",
        ),
        (
            '[[devices]]\nae_title = "CT1"\ntls_fingerprint = "sha1:00"',
            "devices[0].tls_fingerprint",
            "64 hex digits",
        ),
        ("[web]\nheader_timeout = 0.1", "web.header_timeout", "between 0.5 and 300"),
        ("[web]\nmax_per_address = 0", "web.max_per_address", "between 1 and"),
        ("[web]\nmax_connections = 2", "web.max_connections", "between threads"),
        ('[web]\nhttps = "yes"', "web.https", "not of type bool"),
        ("[dicom]\naetitle = 'X'", "dicom.aetitle", "not a known setting"),
        ("[nonsense]\nx = 1", "nonsense", "not a known section"),
        ('[logging]\nlevel = "LOUD"', "logging.level", "not one of"),
        ("[logging]\nmax_mb = 0", "logging.max_mb", "between 1 and"),
        ("[logging]\nbackups = -1", "logging.backups", "between 0 and"),
        ("[logging]\nfile = 7", "logging.file", "not of type str"),
        ('[dicom]\nunknown_ae = "maybe"', "dicom.unknown_ae", "not one of"),
        (
            '[[devices]]\nae_title = "CT1"\n[[devices]]\nae_title = "CT1"',
            "devices[1].ae_title",
            "twice",
        ),
        ('[[devices]]\nhost = "x"', "devices[0].ae_title", "empty"),
        ('[[devices]]\nae_title = "CT1"\nrole = "scanner"', "devices[0].role", "not one of"),
        (
            '[[devices]]\nae_title = "CT1"\ncharacter_set = "KOI8"',
            "devices[0].character_set",
            "not one of",
        ),
        (
            '[[destinations]]\nname = "p"\nae_title = "P"\nhost = "h"\nport = 0',
            "destinations[0].port",
            "not a port",
        ),
        ('[[destinations]]\nname = "p"\nae_title = "P"', "destinations[0].host", "required"),
        ('[[printers]]\nname = "w"\nuri = "smb://x"', "printers[0].uri", "is not folder"),
        ('[[printers]]\nname = "a b"', "printers[0].name", "letters"),
        ("devices = 3", "devices", "array of tables"),
        ("data_dir = ''", "data_dir", "non-empty"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, toml: str, setting: str, reason: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as info:
        config_mod.load(f, env={})
    assert info.value.setting == setting
    assert reason in info.value.reason


def test_invalid_toml_and_missing_file_are_reported(tmp_path: Path) -> None:
    f = tmp_path / "broken.toml"
    f.write_text("[dicom\nport=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config_mod.load(f, env={})
    with pytest.raises(ConfigError, match="cannot be read"):
        config_mod.load(tmp_path / "absent.toml", env={})


def test_logging_file_settings_survive_a_level_override() -> None:
    cfg = config_mod.from_mapping(
        {"logging": {"level": "warning", "file": "log/a.log", "max_mb": 2, "backups": 3}}
    )
    assert cfg.logging == config_mod.LoggingSettings("WARNING", "log/a.log", 2, 3)
    out = config_mod.with_overrides(cfg, log_level="debug")
    assert out.logging == config_mod.LoggingSettings("DEBUG", "log/a.log", 2, 3)


def test_ae_title_is_stripped_of_padding() -> None:
    assert config_mod.validate_ae_title(" CT1 ", "x") == "CT1"


def test_overrides_are_validated() -> None:
    cfg = config_mod.load(None, env={})
    out = config_mod.with_overrides(
        cfg, dicom_port=0, web_port=0, data_dir="/tmp/x", log_level="debug"
    )
    assert (out.dicom.port, out.web.port, str(out.data_dir), out.logging.level) == (
        0,
        0,
        "/tmp/x",
        "DEBUG",
    )
    with pytest.raises(ConfigError) as info:
        config_mod.with_overrides(cfg, dicom_port=99999)
    assert info.value.setting == "dicom.port"


@pytest.mark.parametrize(
    ("profile", "setting", "reason"),
    [
        ({"ae_title": "A\\\\B"}, "print_profiles[0].ae_title", "backslash"),
        ({"paper": "B5"}, "print_profiles[0].paper", "not one of"),
        ({"film_sizes": "8INX10IN 99X99"}, "print_profiles[0].film_sizes", "not a Film Size"),
        ({"film_sizes": "8INX10IN"}, "print_profiles[0].default_film_size", "one of film_sizes"),
        ({"display_formats": "SLIDE"}, "print_profiles[0].display_formats", "unsupported"),
        (
            {"default_magnification": "SMOOTH"},
            "print_profiles[0].default_magnification",
            "not one of",
        ),
        ({"border_density": "GREY"}, "print_profiles[0].border_density", "BLACK, WHITE"),
        ({"max_density": 500}, "print_profiles[0].max_density", "between 0 and 400"),
        ({"min_density": 250}, "print_profiles[0].min_density", "below max_density"),
        ({"dpi": 5}, "print_profiles[0].dpi", "between 20 and 1200"),
        (
            {"paper_for_film": "14INX17IN:A3"},
            "print_profiles[0].paper_for_film",
            "FILM_SIZE_ID=PAPER",
        ),
        (
            {"paper_for_film": "14INX17IN=B4"},
            "print_profiles[0].paper_for_film",
            "FILM_SIZE_ID=PAPER",
        ),
        ({"dpi": "300"}, "print_profiles[0].dpi", "not of type int"),
    ],
)
def test_bad_print_profiles_are_named(profile: dict, setting: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_mod.from_mapping({"print_profiles": [profile]})
    assert info.value.setting == setting
    assert reason in info.value.reason


def test_print_profiles_load_and_are_unique_per_called_ae() -> None:
    cfg = config_mod.from_mapping(
        {"print_profiles": [{"ae_title": "MAMMO", "paper": "a3", "fit": False}, {}]}
    )
    assert (cfg.print_profiles[0].paper, cfg.print_profiles[0].fit) == ("A3", False)
    assert cfg.print_profiles[1].paper == "auto" and cfg.print_profiles[1].ae_title == ""
    with pytest.raises(ConfigError) as info:
        config_mod.from_mapping({"print_profiles": [{"ae_title": "X"}, {"ae_title": "X"}]})
    assert info.value.setting == "print_profiles[1].ae_title"


def test_every_configured_path_is_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ca.pem").write_text("x")
    cfg = config_mod.from_mapping({"data_dir": "rel/data", "dicom": {"tls_ca": "ca.pem"}})
    assert cfg.data_dir == tmp_path / "rel" / "data"
    assert cfg.dicom.tls_ca == str(tmp_path / "ca.pem")
    cfg = config_mod.with_overrides(cfg, data_dir="other")
    assert cfg.data_dir == tmp_path / "other"
