"""Every user route as the viewer and a platform superuser (valid requests: what a role may
do), and every public route without credentials."""

from __future__ import annotations

import pytest
import schemathesis

from tests.support.api_properties import (
    FIXTURES_PER_TEST,
    World,
    call,
    other_roles_schema,
    public_schema,
    use_known_ids,
)


@pytest.mark.parametrize("role", ["viewer", "superuser"])
@FIXTURES_PER_TEST
@other_roles_schema.parametrize()
def test_user_routes_as_other_roles(
    case: schemathesis.Case,
    role: str,
    world: World,
    bearer: dict[str, str],
    objects: dict[str, str],
) -> None:
    use_known_ids(case, objects)
    call(case, world, bearer)


@public_schema.parametrize()
def test_public_routes(case: schemathesis.Case, world: World) -> None:
    call(case, world, {})
