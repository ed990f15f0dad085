"""Handle names, values and permissions: the pure codec."""

from __future__ import annotations

import pytest

from iip.identifiers.codec import (
    MAX_VALUE_BYTES,
    AdminPermission,
    InvalidHandle,
    InvalidValue,
    ValuePermissions,
    format_admin_permissions,
    parse_admin_permissions,
    parse_handle,
    parse_value_reference,
    parse_values,
    select_values,
)


def test_handle_names_split_and_fold_case() -> None:
    name = parse_handle("88.118.8/JXDY2106023")
    assert (name.prefix, name.suffix, name.key) == ("88.118.8", "JXDY2106023", "88.118.8/jxdy2106023")
    assert parse_handle("88.118.8/a/b/c").suffix == "a/b/c"
    assert parse_handle("88.118.8/产品-001").key == "88.118.8/产品-001"
    na = parse_handle("0.NA/88.118.8")
    assert na.is_prefix_handle
    assert na.owner_prefix == "88.118.8"


@pytest.mark.parametrize(
    "text", ["88.118.8", "88.118.8/", "/abc", "88 118/x", "hdl:88.1/x", "88.1/a\x01b", "8/" + "x" * 600]
)
def test_malformed_handles_are_refused(text: str) -> None:
    with pytest.raises(InvalidHandle):
        parse_handle(text)


def test_identity_reference() -> None:
    ref = parse_value_reference("300:0.NA/88.118.8")
    assert (ref.index, ref.name.handle, str(ref)) == (300, "0.NA/88.118.8", "300:0.NA/88.118.8")
    with pytest.raises(InvalidHandle):
        parse_value_reference("0.NA/88.118.8")


def test_admin_permissions_are_rfc_3651_bits_most_significant_first() -> None:
    perms = parse_admin_permissions("011111110011")  # hdl-admintool's default
    assert AdminPermission.ADD_HANDLE in perms
    assert AdminPermission.DELETE_HANDLE in perms
    assert AdminPermission.ADD_NA not in perms
    assert AdminPermission.DELETE_NA not in perms
    assert AdminPermission.READ_VALUE in perms
    assert AdminPermission.LIST_HANDLES not in perms
    assert format_admin_permissions(perms) == "011111110011"
    assert format_admin_permissions(AdminPermission.LIST_HANDLES) == "100000000000"
    with pytest.raises(InvalidValue):
        parse_admin_permissions("0111")


def test_value_permissions() -> None:
    assert str(ValuePermissions()) == "1110"
    secret = ValuePermissions.parse("1100")
    assert secret.admin_read
    assert not secret.public_read


def test_values_accept_the_shapes_clients_send() -> None:
    bare = parse_values([{"index": 1, "type": "URL", "data": "https://a"}])  # pyhandle sends data as a string
    assert bare[0].data.format == "string"
    wrapped = parse_values({"values": [{"index": 2, "type": "EMAIL", "data": {"format": "string", "value": "a@b"}}]})
    assert wrapped[0].index == 2
    single = parse_values({"index": 3, "type": "BIN", "data": {"format": "base64", "value": "aGk="}})
    assert single[0].to_wire()["data"] == {"format": "base64", "value": "aGk="}
    admin = parse_values(
        [
            {
                "index": 100,
                "type": "HS_ADMIN",
                "data": {
                    "format": "admin",
                    "value": {"handle": "0.NA/88.1", "index": "200", "permissions": "011111110011"},
                },
            }
        ]
    )
    assert admin[0].admin().index == 200
    secret = parse_values([{"index": 300, "type": "HS_SECKEY", "data": "s3cret-value"}])
    assert secret[0].permissions == "1100"
    assert secret[0].to_wire()["permissions"] == "1100"


@pytest.mark.parametrize(
    "values",
    [
        [{"index": 1, "type": "URL", "data": "a"}, {"index": 1, "type": "EMAIL", "data": "b"}],  # duplicate index
        [{"index": 0, "type": "URL", "data": "a"}],
        [{"index": 1, "type": "", "data": "a"}],
        [{"index": 1, "type": "URL", "data": {"format": "site", "value": "x"}}],
        [{"index": 1, "type": "URL", "data": {"format": "base64", "value": "***"}}],
        [{"index": 1, "type": "URL", "data": {"format": "hex", "value": "zz"}}],
        [
            {
                "index": 1,
                "type": "URL",
                "data": {"format": "admin", "value": {"handle": "0.NA/1", "index": 1, "permissions": "1"}},
            }
        ],
        [{"index": 1, "type": "URL", "data": "x" * (MAX_VALUE_BYTES + 1)}],
        [{"index": 1, "type": "URL", "data": "nul\u0000"}],
        ["not an object"],
    ],
)
def test_invalid_values_are_refused(values: object) -> None:
    with pytest.raises(InvalidValue):
        parse_values(values)


def test_select_by_type_index_and_subtype() -> None:
    values = parse_values(
        [
            {"index": 1, "type": "URL", "data": "a"},
            {"index": 2, "type": "10320.loc", "data": "b"},
            {"index": 3, "type": "EMAIL", "data": "c"},
        ]
    )
    assert [v.index for v in select_values(values, ["url"], [])] == [1]
    assert [v.index for v in select_values(values, ["10320."], [])] == [2]
    assert [v.index for v in select_values(values, ["URL"], [3])] == [1, 3]
    assert len(select_values(values, [], [])) == 3
