"""One resolution of each route for the whole test session, not one per app.

FastAPI resolves an included route (its dependencies, parameter and response models: pydantic
schemas) lazily, once per app, on the first request that walks past it. Production builds one
app per process, so that is paid once; the tests build an app per test (the `app` fixture:
the app bound to the test's transaction), and paid it on every test's first requests: about
a tenth of a second each on this machine, the largest fixed cost of an ordinary API test.

The routers are module-level objects included with the same arguments by every
`create_app`, so what FastAPI derives from a route and its inclusion is the same for every
app: this plug-in keeps it per (route, inclusion) and hands it to the next app. A resolved
route holds the first app only as its `dependency_overrides_provider`; an app with
dependency overrides is therefore resolved afresh (no test uses them today).

Loaded as a pytest plug-in from tests/conftest.py; nothing outside the tests uses it.
"""

from __future__ import annotations

from typing import Any

from fastapi import routing

_Context = routing._EffectiveRouteContext
_resolve = _Context.from_api_route.__func__  # type: ignore[attr-defined]
# key -> (route, router, context): the route and router are kept alive so their ids stay theirs.
_resolved: dict[tuple[object, ...], tuple[object, object, Any]] = {}


def _key(route: object, include: Any) -> tuple[object, ...]:
    """What the resolution depends on besides the route: how its router was included."""
    return (
        id(route),
        id(include.included_router),
        include.prefix,
        tuple(map(str, include.tags)),
        tuple(id(d.dependency) for d in include.dependencies),
        tuple(sorted(map(str, include.responses))),
        repr(include.default_response_class),
        include.deprecated,
        include.include_in_schema,
        repr(include.generate_unique_id_function),
        repr(include.strict_content_type),
        include.max_body_size,
        repr(include.form_limits),
        tuple(id(c) for c in include.callbacks),
    )


def _from_api_route(cls: type[Any], *, original_route: Any, include_context: Any) -> Any:
    provider = include_context.dependency_overrides_provider
    if getattr(provider, "dependency_overrides", None):
        return _resolve(cls, original_route=original_route, include_context=include_context)
    key = _key(original_route, include_context)
    cached = _resolved.get(key)
    if cached is None:
        context = _resolve(cls, original_route=original_route, include_context=include_context)
        cached = _resolved[key] = (original_route, include_context.included_router, context)
    return cached[2]


_Context.from_api_route = classmethod(_from_api_route)  # type: ignore[assignment]
