"""The self-update's small pieces: the signature check, the start guard, the settings."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fleetcore_agent.config import ConfigError, from_mapping
from fleetcore_agent.update.install import InstallError, wheels_of
from fleetcore_agent.update.layout import Layout, guard
from fleetcore_agent.update.updater import package_from
from fleetcore_agent.update.verify import VerifyError, check_signature, public_key_bytes


def test_signature_check_takes_pem_keys_and_names_the_failure(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    public = public_key_bytes(pem.decode())
    assert public == key.public_key().public_bytes_raw()
    package = tmp_path / "p.whl"
    package.write_bytes(b"package bytes")
    import base64

    good = base64.b64encode(key.sign(b"package bytes")).decode()
    check_signature(package, good, "ed25519", public)
    with pytest.raises(VerifyError, match="not signed"):
        check_signature(package, "", "ed25519", public)
    with pytest.raises(VerifyError, match="signature mismatch"):
        check_signature(package, base64.b64encode(key.sign(b"other")).decode(), "ed25519", public)
    with pytest.raises(ValueError, match="Ed25519"):
        public_key_bytes("aGVsbG8=")


def _layout(tmp_path: Path, *versions: str) -> Layout:
    layout = Layout(tmp_path / "opt")
    for version in versions:
        (layout.versions / version / "bin").mkdir(parents=True)
    layout.point(layout.current, versions[0])
    return layout


def test_the_guard_counts_trial_starts_then_rolls_back(tmp_path: Path) -> None:
    layout = _layout(tmp_path, "1.0", "2.0")
    assert guard(layout) == "no trial"
    layout.switch("2.0", deadline_s=60, max_starts=2)
    assert layout.target(layout.current) == "2.0"
    assert layout.target(layout.previous) == "1.0"
    assert guard(layout) == "trial start 1 of 2"
    assert guard(layout) == "trial start 2 of 2"
    assert guard(layout) == "rolled back to 1.0"
    assert layout.target(layout.current) == "1.0"
    assert layout.trial() is None
    outcome = layout.take_outcome()
    assert outcome is not None
    assert outcome["version"] == "2.0"
    assert "2 starts" in outcome["error"]
    assert layout.take_outcome() is None  # reported once
    assert layout.prune() == ["2.0"]
    assert not list(tmp_path.glob("opt/.*.tmp"))


def test_a_version_that_passes_is_kept(tmp_path: Path) -> None:
    layout = _layout(tmp_path, "1.0", "2.0", "0.9")
    layout.switch("2.0", deadline_s=60, max_starts=3)
    assert guard(layout) == "trial start 1 of 3"
    layout.passed()
    assert guard(layout) == "no trial"
    assert layout.target(layout.current) == "2.0"
    assert layout.prune() == ["0.9"]


def test_update_settings_are_checked(tmp_path: Path) -> None:
    base = {"device_id": "d", "token": "t", "http_url": "http://127.0.0.1:8000"}
    config = from_mapping({**base, "update": {"root": str(tmp_path)}})
    assert config.update is not None
    assert config.update.health_deadline_s == 120
    with pytest.raises(ConfigError, match=r"^update\.root: required"):
        from_mapping({**base, "update": {}})
    with pytest.raises(ConfigError, match=r"^update\.restart"):
        from_mapping({**base, "update": {"root": "/x", "restart": "reboot"}})
    with pytest.raises(ConfigError, match=r"^update\.public_key"):
        from_mapping({**base, "update": {"root": "/x", "public_key": "bm90IGEga2V5"}})
    with pytest.raises(ConfigError, match=r"^data_dir: must be outside"):
        from_mapping(
            {
                **base,
                "data_dir": str(tmp_path / "versions" / "q"),
                "update": {"root": str(tmp_path)},
            }
        )
    with pytest.raises(ConfigError, match=r"^update: needs update\.url or http_url"):
        from_mapping({"device_id": "d", "token": "t", "update": {"root": "/x"}})


def test_assignments_and_packages_are_read_strictly(tmp_path: Path) -> None:
    assert package_from({"sw_title": "a", "sw_version": "1"}) is None  # incomplete
    assert (
        package_from({"sw_title": "a", "sw_version": "1", "sw_size": "x", "sw_checksum": "c"})
        is None
    )
    found = package_from({"sw_title": "a", "sw_version": "1", "sw_size": 3, "sw_checksum": "c"})
    assert found is not None
    assert found.checksum_algorithm == "SHA256"
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a wheel")
    with pytest.raises(InstallError, match="neither a wheel"):
        wheels_of(junk, tmp_path / "wheels")
    bundle = tmp_path / "bundle.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("../../evil.whl", b"x")  # only the name is kept: no way out
    assert wheels_of(bundle, tmp_path / "wheels") == [tmp_path / "wheels" / "evil.whl"]
    assert not (tmp_path.parent / "evil.whl").exists()
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("dir/.hidden.whl", b"x")
    with pytest.raises(InstallError, match="bad wheel name"):
        wheels_of(bundle, tmp_path / "wheels")
