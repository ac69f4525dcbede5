"""Install a verified package into a new virtualenv beside the current one.

A package is one wheel of fleetcore-agent, or a bundle (a zip or tar of wheels: the agent
and what it needs, for devices without a package index). Its wheels join <root>/wheels, the
--find-links of every install, so a single-wheel update finds the wheels of earlier ones
(fleetcore-protocol is not on a public index). The new virtualenv is built in
<root>/versions/<version> with pip (or uv), and must answer `fleetcore-agent --version`
with that version before anything switches to it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from fleetcore_agent.update.layout import Layout

log = logging.getLogger("fleetcore_agent.update")

DISTRIBUTION = "fleetcore-agent"


class InstallError(RuntimeError):
    """The package could not be installed; nothing was switched."""


def wheels_of(package: Path, into: Path) -> list[Path]:
    """Put the package's wheels into `into` (one wheel, or every wheel of a bundle)."""
    into.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(package):
        with zipfile.ZipFile(package) as archive:
            names = archive.namelist()
            inner = [n for n in names if n.endswith(".whl") and not n.endswith("/")]
            if inner:
                return [
                    _extract_member(archive.read(n), PurePosixPath(n).name, into) for n in inner
                ]
            wheel_name = _wheel_filename(archive, names)
        target = into / wheel_name
        shutil.copyfile(package, target)
        return [target]
    if tarfile.is_tarfile(package):
        out: list[Path] = []
        with tarfile.open(package) as archive:
            for member in archive.getmembers():
                if member.isfile() and member.name.endswith(".whl"):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        name = PurePosixPath(member.name).name
                        out.append(_extract_member(handle.read(), name, into))
        if out:
            return out
    raise InstallError("the package is neither a wheel nor a zip or tar of wheels")


def _extract_member(data: bytes, name: str, into: Path) -> Path:
    if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(".whl"):
        raise InstallError(f"bad wheel name in the bundle: {name!r}")
    target = into / name
    target.write_bytes(data)
    return target


def _wheel_filename(archive: zipfile.ZipFile, names: list[str]) -> str:
    """A wheel's proper file name from its own metadata (pip insists on it)."""
    wheel_files = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/WHEEL")]
    if len(wheel_files) != 1:
        raise InstallError("the package is not a wheel (no single .dist-info/WHEEL)")
    stem = wheel_files[0].split("/")[0].removesuffix(".dist-info")
    tags = [
        line.split(":", 1)[1].strip()
        for line in archive.read(wheel_files[0]).decode("utf-8", "replace").splitlines()
        if line.startswith("Tag:")
    ]
    if not tags or "-" not in stem:
        raise InstallError("the wheel's metadata has no name, version or tag")
    return f"{stem}-{tags[0]}.whl"


def install(
    layout: Layout,
    package: Path,
    version: str,
    *,
    installer: str = "pip",
    offline: bool = False,
    timeout_s: float = 900.0,
) -> Path:
    """Install `fleetcore-agent==version` from the package into versions/<version>."""
    wheels_of(package, layout.wheels)
    target = layout.version_dir(version)
    if layout.target(layout.current) == version:
        raise InstallError(f"version {version} is the one running")
    shutil.rmtree(target, ignore_errors=True)  # a failed attempt's leftovers
    layout.versions.mkdir(parents=True, exist_ok=True)
    requirement = f"{DISTRIBUTION}=={version}"
    sources = ["--find-links", str(layout.wheels), *(["--no-index"] if offline else [])]
    python = target / "bin" / "python"
    if installer == "pip":
        steps = [
            [sys.executable, "-m", "venv", str(target)],
            [str(python), "-m", "pip", "install", "--quiet", *sources, requirement],
        ]
    else:
        uv = shutil.which(installer) or installer
        steps = [
            [uv, "venv", "--quiet", "--python", sys.executable, str(target)],
            [uv, "pip", "install", "--quiet", "--python", str(python), *sources, requirement],
        ]
    try:
        for step in steps:
            _run(step, timeout_s)
        answer = _run([str(target / "bin" / "fleetcore-agent"), "--version"], 60)
    except InstallError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    if version not in answer.split():
        shutil.rmtree(target, ignore_errors=True)
        raise InstallError(f"the installed agent says {answer.strip()!r}, not version {version}")
    return target


def _run(command: list[str], timeout_s: float) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - our own installer, arguments from the layout
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"{Path(command[0]).name}: {exc}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-500:]
        raise InstallError(f"{Path(command[0]).name} {command[1]} failed: {tail}")
    return done.stdout
