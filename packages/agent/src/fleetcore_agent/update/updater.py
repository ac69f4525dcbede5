"""The self-update worker: follows the sw_* desired attributes, and the trial of a new version.

On an assignment of another version of this agent's title: DOWNLOADING (resumable),
DOWNLOADED, VERIFIED (SHA-256, and the Ed25519 signature when a key is configured),
UPDATING (a new virtualenv, then the switch of `current`, then a restart). Any failure ends
in FAILED with sw_error, the downloaded file removed and nothing switched; that package is
not tried again until the platform assigns another.

A new version starts on trial (layout.py): it must report to the platform within the
deadline. Then it is kept (UPDATED); otherwise it switches back itself and restarts, and
the start guard does the same for a version that crashes before it can.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleetcore_agent import __version__
from fleetcore_agent.config import AgentConfig, UpdateConfig, public_key_text
from fleetcore_agent.update import state as s
from fleetcore_agent.update.download import Downloader, DownloadError, Package
from fleetcore_agent.update.install import InstallError, install
from fleetcore_agent.update.layout import Layout
from fleetcore_agent.update.state import StateFile
from fleetcore_agent.update.verify import (
    VerifyError,
    check_checksum,
    check_signature,
    public_key_bytes,
)

log = logging.getLogger("fleetcore_agent.update")

_SAFE_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]{0,63}$")
Reporter = Callable[[dict[str, Any]], bool]


def package_from(shared: dict[str, Any]) -> Package | None:
    """The software assignment in the desired attributes, if complete."""
    try:
        title, version = str(shared["sw_title"]), str(shared["sw_version"])
        size, checksum = int(shared["sw_size"]), str(shared["sw_checksum"])
    except (KeyError, TypeError, ValueError):
        return None
    return Package(
        title=title,
        version=version,
        size=size,
        checksum=checksum,
        checksum_algorithm=str(shared.get("sw_checksum_algorithm") or "SHA256"),
        signature=str(shared.get("sw_signature") or ""),
        signature_alg=str(shared.get("sw_signature_alg") or "ed25519"),
    )


class Updater:
    """One agent's self-update; `report` sends client attributes and says if they arrived."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        report: Reporter,
        restart: Callable[[], None],
        title: str = "fleetcore-agent",
    ) -> None:
        self.config = config
        self.settings: UpdateConfig | None = config.update
        self.title = self.settings.title if self.settings else title
        self.report = report
        self.restart = restart
        self.directory = config.data_dir / "update"
        self.state = StateFile(self.directory / "state.json")
        self.layout = Layout(self.settings.root) if self.settings else None
        self.on_trial = False
        self._wanted: Package | None = None
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # What the platform sees --------------------------------------------------------

    def attributes(self) -> dict[str, Any]:
        """current_sw_* and, once there was an update, sw_state and sw_error."""
        values: dict[str, Any] = {"current_sw_title": self.title, "current_sw_version": __version__}
        current = self.state.get()
        if current.state:
            values["sw_state"] = current.state
            values["sw_error"] = current.error
        return values

    def _enter(self, state: str, error: str | None = None, **changes: Any) -> None:
        self.state.set(state=state, error=error, **changes)
        if error:
            log.error("update %s: %s", state, error)
        else:
            log.info("update %s", state)
        self.report(self.attributes())

    # Life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Settle how the last update ended, start a trial's health check, start working."""
        if self.layout is not None:
            self._settle(self.layout)
        worker = threading.Thread(target=self._work, name="updater", daemon=True)
        worker.start()
        self._threads.append(worker)

    def stop(self) -> None:
        """Stop the worker (a download in progress stays resumable)."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    def _settle(self, layout: Layout) -> None:
        outcome = layout.take_outcome()
        current = self.state.get()
        if outcome is not None:
            version = str(outcome.get("version", ""))
            checksum = current.checksum if current.version == version else ""
            self.state.set(
                state=s.FAILED,
                error=str(outcome.get("error") or "rolled back"),
                failed={"version": version, "checksum": checksum},
            )
            log.error("update to %s failed: %s", version, outcome.get("error"))
        trial = layout.trial()
        if trial is not None and trial.get("version") == __version__:
            self.on_trial = True
            deadline = float(trial.get("deadline_s") or self._settings().health_deadline_s)
            checker = threading.Thread(
                target=self._health_check, args=(layout, deadline), name="trial", daemon=True
            )
            checker.start()
            self._threads.append(checker)
            return
        if current.state == s.UPDATING and current.version == __version__:
            self.state.set(state=s.UPDATED, error=None)  # passed, but crashed before saying so
        layout.prune()

    def _settings(self) -> UpdateConfig:
        assert self.settings is not None
        return self.settings

    # The trial of a new version ------------------------------------------------------

    def _health_check(self, layout: Layout, deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        probe = {**self.attributes(), "sw_state": s.UPDATING, "sw_error": None}
        while time.monotonic() < deadline and not self._stopping.is_set():
            if self.report(probe):
                layout.passed()
                self.on_trial = False
                self._enter(s.UPDATED, title=self.title, version=__version__)
                layout.prune()
                with self._cond:
                    self._cond.notify_all()
                return
            self._stopping.wait(0.2)
        if self._stopping.is_set():
            return  # stopped from outside: the guard counts the next start
        previous = layout.roll_back(
            f"version {__version__} did not connect and report within {deadline_s:g} s"
        )
        log.error("trial of %s failed: rolling back to %s", __version__, previous)
        self.restart()

    # Assignments --------------------------------------------------------------------

    def desired(self, shared: dict[str, Any]) -> None:
        """The desired attributes changed: take note of the software assignment."""
        package = package_from(shared)
        if package is None or package.title != self.title:
            return
        with self._cond:
            self._wanted = package
            self._cond.notify_all()

    def _work(self) -> None:
        done: Package | None = None
        while not self._stopping.is_set():
            with self._cond:
                while not self._stopping.is_set() and (
                    self._wanted is None or self._wanted == done or self.on_trial
                ):
                    self._cond.wait(1.0)
                package = self._wanted
            if package is None or self._stopping.is_set():
                return
            try:
                self._apply(package)
            except Exception:  # the worker must outlive a bug in one attempt
                log.exception("update to %s failed unexpectedly", package.version)
                self._stopping.wait(self._settings().retry_s if self.settings else 10)
                continue
            done = package

    def _apply(self, package: Package) -> None:
        current = self.state.get()
        if package.version == __version__:
            if current.state != s.UPDATED or current.version != __version__:
                self._enter(s.UPDATED, title=self.title, version=__version__, checksum="")
            return
        failed = current.failed
        if failed.get("version") == package.version and failed.get("checksum") in (
            "",
            package.checksum,
        ):
            return  # reported FAILED already; the platform has to assign another package
        if self.settings is None or self.layout is None:
            self._fail(package, "self-update is not configured on this device (update: root)")
            return
        if not _SAFE_VERSION.match(package.version):
            self._fail(package, f"version {package.version!r} is not a usable directory name")
            return
        path = self._download(package, self.settings)
        if path is None:
            return
        try:
            self._enter(s.DOWNLOADED)
            check_checksum(path, package.checksum, package.checksum_algorithm)
            if self.settings.public_key:
                key = public_key_bytes(public_key_text(self.settings.public_key))
                check_signature(path, package.signature, package.signature_alg, key)
            self._enter(s.VERIFIED)
            self._enter(s.UPDATING)
            install(
                self.layout,
                path,
                package.version,
                installer=self.settings.installer,
                offline=self.settings.offline,
            )
        except (VerifyError, InstallError) as exc:
            path.unlink(missing_ok=True)
            self._fail(package, str(exc))
            return
        self.layout.switch(
            package.version,
            deadline_s=self.settings.health_deadline_s,
            max_starts=self.settings.max_trial_starts,
        )
        path.unlink(missing_ok=True)
        log.info("switched to %s: restarting", package.version)
        self.restart()
        self._stopping.set()

    def _download(self, package: Package, settings: UpdateConfig) -> Path | None:
        self._enter(
            s.DOWNLOADING, title=package.title, version=package.version, checksum=package.checksum
        )
        downloader = Downloader(
            settings.url or self.config.http_url,
            self.config.token,
            self.directory,
            chunk_size=settings.chunk_size,
        )
        while not self._stopping.is_set():
            if self._wanted != package:
                return None  # another assignment came in: start over with that one
            try:
                return downloader.fetch(
                    package, stop=lambda: self._stopping.is_set() or self._wanted != package
                )
            except DownloadError as exc:
                if exc.final:
                    self._fail(package, str(exc))
                    return None
                if str(exc) != "stopped":
                    log.warning("download of %s: %s; trying again", package.version, exc)
                self._stopping.wait(settings.retry_s)
        return None

    def _fail(self, package: Package, error: str) -> None:
        self._enter(
            s.FAILED,
            error,
            title=package.title,
            version=package.version,
            checksum=package.checksum,
            failed={"version": package.version, "checksum": package.checksum},
        )
