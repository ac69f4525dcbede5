"""Every user route of the second half (tests/support/api_properties.py: half), as the admin:
valid requests and the coverage phase (boundaries, wrong types, missing fields, methods)."""

from __future__ import annotations

import schemathesis

from tests.support.api_properties import (
    FIXTURES_PER_TEST,
    World,
    admin_schemas,
    call,
    use_known_ids,
)


@FIXTURES_PER_TEST
@admin_schemas[1].parametrize()
def test_user_routes_as_admin(
    case: schemathesis.Case, world: World, admin: dict[str, str], objects: dict[str, str]
) -> None:
    use_known_ids(case, objects)
    call(case, world, admin)
