"""The user routes of the second half (tests/support/api_properties.py: half), as the admin."""

from tests.support.api_properties import admin_schemas, admin_test

test_user_routes_as_admin = admin_test(admin_schemas[1])
