"""A real Prometheus (Debian's package) scraping a test server, and PromQL helpers.

`Prometheus` starts the server on a free port with its data in a temporary directory;
`metric_names` reads the metric names out of a PromQL expression the way a reader would:
everything that is not a function, an aggregation, a keyword, a label or a range.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.support.http_clients import local_client
from tests.support.postgres import free_port
from tests.support.wait import wait_until

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"and", "or", "unless", "inf", "nan", "atan2"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (histogram and counter suffixes kept)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _NAME.finditer(text):
        name = match.group()
        if name.lower() in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue  # a keyword, or a function or aggregation called
        names.add(name)
    return names


class Prometheus:
    """`prometheus` with a given configuration file, on a free port."""

    def __init__(self, config: Path, root: Path) -> None:
        self.config = config
        self.port = free_port()
        self.log = root / "prometheus.log"
        self.data = root / "prometheus-data"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        """The HTTP base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start and wait until /-/ready answers 200."""
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.data}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        await wait_until(self._ready, within=60, every=0.1)

    async def _ready(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, f"prometheus exited:\n{self.log.read_text()[-3000:]}"
        try:
            async with local_client() as http:
                return (await http.get(f"{self.base}/-/ready", timeout=2)).status_code == 200
        except httpx.TransportError:
            return False

    async def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>: the answer's data (an error answer fails the test)."""
        async with local_client() as http:
            response = await http.get(f"{self.base}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        data = await self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
