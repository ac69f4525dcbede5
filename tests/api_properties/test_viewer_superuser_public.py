"""Every user route as the viewer and a platform superuser (valid requests: what a role may
do), and every public route without credentials."""

from __future__ import annotations

import schemathesis

from tests.support.api_properties import (
    World,
    call,
    public_schema,
    roles_test,
)

test_user_routes_as_other_roles = roles_test(["viewer", "superuser"])


@public_schema.parametrize()
def test_public_routes(case: schemathesis.Case, world: World) -> None:
    call(case, world, {})
