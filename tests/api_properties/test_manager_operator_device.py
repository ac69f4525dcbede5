"""Every user route as the manager and the operator (valid requests: what a role may do), and
every device route with a device's token."""

from __future__ import annotations

import schemathesis

from tests.support.api_properties import (
    FIXTURES_PER_TEST,
    World,
    call,
    device_schema,
    roles_test,
    use_known_ids,
)

test_user_routes_as_other_roles = roles_test(["manager", "operator"])


@FIXTURES_PER_TEST
@device_schema.parametrize()
def test_device_routes(case: schemathesis.Case, world: World, device: dict[str, str]) -> None:
    use_known_ids(case, device)
    call(case, world, {"X-Device-Token": device["token"]})
