"""Jinja2 templates shared by every page."""

from __future__ import annotations

from importlib.resources import files

from fastapi.templating import Jinja2Templates

from fleetcore import __version__

templates = Jinja2Templates(directory=str(files("fleetcore") / "templates"))
templates.env.globals["version"] = __version__
